//! The attestations of a build, once it has run: what it asked for
//! ([`AttestationRequest`](kiln_exporters::AttestationRequest), read by kiln-exporters from
//! `kiln build`'s flags or a daemon's `attest:` attributes), what it says of its request
//! ([`RequestFacts`]) and its record (its id and times) make the exporters'
//! [`Attestations`]; each platform's LLB is given to the export beside them.

use kiln_exporters::{AttestationRequest, Attestations, ProvenanceRequest, RequestFacts};
use kiln_solver::BuildRecord;

/// The attestations for the exporters: `requested`, with provenance about `facts` and the
/// run `record` notes (its id, when it started, and when it finished, in whole seconds).
pub fn attestations(
    requested: &AttestationRequest,
    facts: RequestFacts,
    record: &BuildRecord,
) -> Attestations {
    let started = i64::try_from(record.created).ok();
    let finished =
        started.map(|s| s + i64::try_from(record.duration_ms.div_ceil(1000)).unwrap_or(0));
    Attestations {
        provenance: requested.provenance.map(|mode| ProvenanceRequest {
            mode,
            request: facts,
            invocation_id: record.id.clone(),
            started_on: started,
            finished_on: finished,
        }),
        sbom: requested.sbom,
    }
}
