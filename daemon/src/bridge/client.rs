//! kiln's own frontend as a frontend image: the gateway client side. `kiln gateway-frontend`
//! is the entrypoint of an image that any BuildKit-compatible builder (kiln or BuildKit) runs
//! as `# syntax=IMAGE`; it talks `LLBBridge` on its standard input and output:
//!
//! 1. the options come from `BUILDKIT_FRONTEND_OPT_n` (BuildKit's attribute names, read by the
//!    daemon's [`convert_options`](crate::frontend::convert_options));
//! 2. `Solve` of the `dockerfile` local source and `ReadFile` of the Dockerfile (or kiln.yaml)
//!    and its `.dockerignore`; the context's `.dockerignore` the same way;
//! 3. the built-in converter, its base images resolved with `ResolveImageConfig`;
//! 4. `Solve` of the converted Definition, and `Return` of its ref with the image
//!    configuration (`containerimage.config`), or of the error.

use std::collections::HashMap;

use kiln_frontend::{ImageMetaResolver, ResolvedImage};
use kiln_llb::pb::{Definition, Platform};
use tonic::transport::Channel;

use crate::pb::gateway::llb_bridge_client::LlbBridgeClient;
use crate::pb::gateway::{
    ReadFileRequest, ResolveImageConfigRequest, Result as PbResult, ReturnRequest, SolveRequest,
    result,
};
use crate::pb::google::rpc::Status;

/// The largest message either side sends.
const MAX_MESSAGE: usize = 32 << 20;

/// The builder on the other end of standard input and output (pipes, as a builder gives
/// them: read and written without blocking, and without the line buffer of Rust's stdout).
fn stdio_channel() -> std::io::Result<Channel> {
    use std::os::fd::AsFd as _;
    let input = std::io::stdin().as_fd().try_clone_to_owned()?;
    let output = std::io::stdout().as_fd().try_clone_to_owned()?;
    Ok(crate::session::one_connection(
        super::PipeConn::new(input, output)?,
        "http://builder",
        "standard input and output carry one connection",
    ))
}

/// The frontend options in this process's environment.
fn options() -> HashMap<String, String> {
    std::env::vars()
        .filter_map(|(name, value)| {
            name.strip_prefix("BUILDKIT_FRONTEND_OPT_")?;
            let (key, value) = value.split_once('=')?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect()
}

type Client = LlbBridgeClient<Channel>;

/// Solves `definition` and gives the ref of its result.
async fn solve(client: &mut Client, definition: Definition) -> Result<String, String> {
    let response = client
        .solve(SolveRequest {
            definition: Some(definition),
            allow_result_return: true,
            allow_result_array_ref: true,
            ..SolveRequest::default()
        })
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    match response.result.and_then(|r| r.result) {
        Some(result::Result::Ref(r)) => Ok(r.id),
        Some(result::Result::RefDeprecated(id)) => Ok(id),
        _ => Ok(response.r#ref),
    }
}

/// A file of the result `reference`; `None` if it is not there.
async fn read_file(
    client: &mut Client,
    reference: &str,
    path: &str,
) -> Result<Option<Vec<u8>>, String> {
    match client
        .read_file(ReadFileRequest {
            r#ref: reference.to_owned(),
            file_path: path.to_owned(),
            ..ReadFileRequest::default()
        })
        .await
    {
        Ok(response) => Ok(Some(response.into_inner().data)),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(status) => Err(status.message().to_owned()),
    }
}

/// Base images, resolved by the builder.
struct BuilderResolver {
    client: Client,
    runtime: tokio::runtime::Handle,
}

impl ImageMetaResolver for BuilderResolver {
    fn resolve(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<ResolvedImage, Box<dyn std::error::Error + Send + Sync>> {
        let mut client = self.client.clone();
        let request = ResolveImageConfigRequest {
            r#ref: reference.to_owned(),
            platform: Some(platform.clone()),
            ..ResolveImageConfigRequest::default()
        };
        let response = self
            .runtime
            .block_on(client.resolve_image_config(request))
            .map_err(|s| s.message().to_owned())?
            .into_inner();
        Ok(ResolvedImage {
            digest: response.digest,
            config: response.config,
        })
    }
}

/// Reads, converts and solves the build file; gives the result's ref and image config.
async fn build(
    client: &mut Client,
    attrs: &HashMap<String, String>,
) -> Result<(String, Definition, Vec<u8>), String> {
    let mut options =
        crate::frontend::convert_options(attrs).map_err(|s| s.message().to_owned())?;
    let name = attrs
        .get("filename")
        .filter(|f| !f.is_empty())
        .map_or("Dockerfile", String::as_str)
        .to_owned();
    let key = |attr: &str, default: &str| {
        attrs
            .get(attr)
            .filter(|k| !k.is_empty())
            .map_or(default, String::as_str)
            .to_owned()
    };
    let (dockerfile_key, context_key) = (
        key("dockerfilekey", "dockerfile"),
        key("contextkey", "context"),
    );
    let specific = format!("{name}.dockerignore");
    let local = |source: &str, include: Vec<String>| {
        kiln_llb::local_with(
            source,
            kiln_llb::LocalOptions {
                include_patterns: include,
                shared_key_hint: Some(source.to_owned()),
                ..kiln_llb::LocalOptions::default()
            },
        )
        .marshal()
    };
    let files = solve(
        client,
        local(&dockerfile_key, vec![name.clone(), specific.clone()]),
    )
    .await?;
    let file = read_file(client, &files, &name).await?.ok_or_else(|| {
        format!("failed to read dockerfile: open {name}: no such file or directory")
    })?;
    let specific = read_file(client, &files, &specific).await?;
    let context = solve(
        client,
        local(&context_key, vec![".dockerignore".to_owned()]),
    )
    .await?;
    let general = read_file(client, &context, ".dockerignore").await?;
    let text = |bytes: Option<Vec<u8>>| bytes.map(|b| String::from_utf8_lossy(&b).into_owned());
    let (specific, general) = (text(specific), text(general));
    options.excludes = kiln_frontend::select_dockerignore(specific.as_deref(), general.as_deref())
        .map(kiln_frontend::parse_dockerignore)
        .unwrap_or_default();
    let resolver = BuilderResolver {
        client: client.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    let converted = tokio::task::spawn_blocking(move || {
        if kiln_frontend::is_kiln_yaml(&options.file_name, &file) {
            kiln_frontend::convert_yaml(&file, &options, &resolver).map_err(|e| e.to_string())
        } else {
            kiln_frontend::convert(&file, &options, &resolver).map_err(|e| e.to_string())
        }
    })
    .await
    .map_err(|e| e.to_string())??;
    let config = serde_json::to_vec(&converted.config).map_err(|e| e.to_string())?;
    let reference = if converted.definition.def.is_empty() {
        String::new()
    } else {
        solve(client, converted.definition.clone()).await?
    };
    Ok((reference, converted.definition, config))
}

/// Serves one build to the builder on standard input and output: converts the build file its
/// options name and returns the result (or the error) to it.
pub async fn serve_builtin_frontend() -> Result<(), tonic::Status> {
    let channel = stdio_channel().map_err(|e| {
        tonic::Status::unavailable(format!(
            "standard input and output must be pipes to a builder: {e}"
        ))
    })?;
    let mut client = LlbBridgeClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let request = match build(&mut client, &options()).await {
        Ok((id, definition, config)) => ReturnRequest {
            result: Some(PbResult {
                result: Some(result::Result::Ref(crate::pb::gateway::Ref {
                    id,
                    def: (!definition.def.is_empty()).then_some(definition),
                })),
                metadata: HashMap::from([(super::IMAGE_CONFIG_KEY.to_owned(), config)]),
            }),
            error: None,
        },
        Err(message) => ReturnRequest {
            result: None,
            error: Some(Status {
                code: tonic::Code::Unknown as i32,
                message,
                details: Vec::new(),
            }),
        },
    };
    client.r#return(request).await?;
    Ok(())
}
