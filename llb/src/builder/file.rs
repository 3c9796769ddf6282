//! File ops: [`State::file`] applies a [`FileAction`] chain (mkdir, mkfile, rm, symlink, copy)
//! in one `pb::FileOp`. A new file action goes here, as a `FileAction` constructor and its
//! `then_` form.

use std::sync::Arc;

use super::{Inputs, Node, State, caps};
use crate::pb;

impl State {
    /// Applies a chain of file actions to this state.
    pub fn file(&self, action: FileAction) -> State {
        let mut inputs = Inputs::default();
        let mut actions = Vec::with_capacity(action.steps.len());
        let count = action.steps.len();
        for (i, step) in action.steps.into_iter().enumerate() {
            // The first action works on this state; each later one on the previous result,
            // numbered after the op's inputs (resolved once all inputs are known, below).
            let input = if i == 0 {
                inputs.index(self)
            } else {
                i64::MIN + (i as i64 - 1)
            };
            let secondary_input = match &step.secondary {
                Some(state) => inputs.index(state),
                None => -1,
            };
            actions.push(pb::FileAction {
                input,
                secondary_input,
                output: if i + 1 == count { 0 } else { -1 },
                action: Some(step.action),
            });
        }
        let base = inputs.list.len() as i64;
        for action in &mut actions {
            if action.input < -1 {
                action.input = base + (action.input - i64::MIN);
            }
            owners_by_name_read(action);
        }
        let node = Node {
            op: pb::Op {
                constraints: Some(pb::WorkerConstraints::default()),
                op: Some(pb::op::Op::File(pb::FileOp { actions })),
                ..Default::default()
            },
            inputs: inputs.list,
            metadata: caps(["file.base"]),
        };
        self.derive(Arc::new(node), 0)
    }
}

/// Points the names of an action's owner at the action's own input: as in BuildKit (its
/// `UserOpt.ByName.Input`), a name is looked up in `/etc/passwd` and `/etc/group` of the tree
/// the action writes to.
fn owners_by_name_read(action: &mut pb::FileAction) {
    let owner = match &mut action.action {
        Some(pb::file_action::Action::Mkdir(a)) => a.owner.as_mut(),
        Some(pb::file_action::Action::Mkfile(a)) => a.owner.as_mut(),
        Some(pb::file_action::Action::Symlink(a)) => a.owner.as_mut(),
        Some(pb::file_action::Action::Copy(a)) => a.owner.as_mut(),
        Some(pb::file_action::Action::Rm(_)) | None => None,
    };
    let Some(owner) = owner else { return };
    for user in [owner.user.as_mut(), owner.group.as_mut()]
        .into_iter()
        .flatten()
    {
        if let Some(pb::user_opt::User::ByName(named)) = &mut user.user {
            named.input = action.input;
        }
    }
}

/// Owner of a file created by a file action; names are looked up in the destination tree
/// (the action's input) when the op runs.
#[derive(Debug, Clone, Default)]
pub struct Chown {
    /// The user, by name or id.
    pub user: Option<pb::user_opt::User>,
    /// The group, by name or id.
    pub group: Option<pb::user_opt::User>,
}

impl Chown {
    fn to_pb(&self) -> pb::ChownOpt {
        pb::ChownOpt {
            user: self.user.clone().map(|u| pb::UserOpt { user: Some(u) }),
            group: self.group.clone().map(|g| pb::UserOpt { user: Some(g) }),
        }
    }
}

/// Options of [`FileAction::mkdir`].
#[derive(Debug, Clone, Default)]
pub struct MkdirOptions {
    /// Create missing parent directories too.
    pub make_parents: bool,
    /// Owner override.
    pub owner: Option<Chown>,
    /// Modification time in Unix nanoseconds (default: keep the current time).
    pub timestamp: Option<i64>,
}

/// Options of [`FileAction::copy`].
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Owner override.
    pub owner: Option<Chown>,
    /// Permission bits override.
    pub mode: Option<i32>,
    /// Resolve a symlink at `src`.
    pub follow_symlink: bool,
    /// Copy the contents of a directory `src`, not the directory itself.
    pub dir_copy_contents: bool,
    /// Unpack `src` if it is an archive (Dockerfile `ADD`).
    pub attempt_unpack_docker_compatibility: bool,
    /// Create missing directories of `dest`.
    pub create_dest_path: bool,
    /// Treat `src` as a wildcard pattern.
    pub allow_wildcard: bool,
    /// Do not fail when the wildcard matches nothing.
    pub allow_empty_wildcard: bool,
    /// Modification time override in Unix nanoseconds.
    pub timestamp: Option<i64>,
    /// Only copy paths matching these patterns.
    pub include_patterns: Vec<String>,
    /// Never copy paths matching these patterns.
    pub exclude_patterns: Vec<String>,
    /// Symbolic permissions (`u+x,g-w`) applied to each copied file's own mode; overrides
    /// `mode`.
    pub mode_str: Option<String>,
    /// Paths (relative to the source) that must exist, even when include patterns are used.
    pub required_paths: Vec<String>,
}

#[derive(Debug, Clone)]
struct FileStep {
    action: pb::file_action::Action,
    secondary: Option<State>,
}

/// A chain of file actions, each applied to the result of the one before.
#[derive(Debug, Clone, Default)]
pub struct FileAction {
    steps: Vec<FileStep>,
}

impl FileAction {
    fn start() -> Self {
        Self::default()
    }

    fn push(mut self, action: pb::file_action::Action, secondary: Option<State>) -> Self {
        self.steps.push(FileStep { action, secondary });
        self
    }

    /// Creates a directory.
    pub fn mkdir(path: &str, mode: u32, options: MkdirOptions) -> Self {
        Self::start().then_mkdir(path, mode, options)
    }

    /// Then creates a directory.
    pub fn then_mkdir(self, path: &str, mode: u32, options: MkdirOptions) -> Self {
        self.push(
            pb::file_action::Action::Mkdir(pb::FileActionMkDir {
                path: path.to_owned(),
                mode: mode as i32,
                make_parents: options.make_parents,
                owner: options.owner.as_ref().map(Chown::to_pb),
                timestamp: options.timestamp.unwrap_or(-1),
            }),
            None,
        )
    }

    /// Creates a file with `data`.
    pub fn mkfile(path: &str, mode: u32, data: &[u8]) -> Self {
        Self::start().then_mkfile(path, mode, data)
    }

    /// Then creates a file with `data`.
    pub fn then_mkfile(self, path: &str, mode: u32, data: &[u8]) -> Self {
        self.push(
            pb::file_action::Action::Mkfile(pb::FileActionMkFile {
                path: path.to_owned(),
                mode: mode as i32,
                data: data.to_vec(),
                owner: None,
                timestamp: -1,
            }),
            None,
        )
    }

    /// Removes a path; `allow_not_found` makes a missing path no error.
    pub fn rm(path: &str, allow_not_found: bool) -> Self {
        Self::start().then_rm(path, allow_not_found)
    }

    /// Then removes a path.
    pub fn then_rm(self, path: &str, allow_not_found: bool) -> Self {
        self.push(
            pb::file_action::Action::Rm(pb::FileActionRm {
                path: path.to_owned(),
                allow_not_found,
                allow_wildcard: false,
            }),
            None,
        )
    }

    /// Creates a symbolic link `newpath` pointing at `oldpath`.
    pub fn symlink(oldpath: &str, newpath: &str) -> Self {
        Self::start().then_symlink(oldpath, newpath)
    }

    /// Then creates a symbolic link.
    pub fn then_symlink(self, oldpath: &str, newpath: &str) -> Self {
        self.push(
            pb::file_action::Action::Symlink(pb::FileActionSymlink {
                oldpath: oldpath.to_owned(),
                newpath: newpath.to_owned(),
                owner: None,
                timestamp: -1,
            }),
            None,
        )
    }

    /// Copies `src` of `from` to `dest`.
    pub fn copy(from: &State, src: &str, dest: &str, options: CopyOptions) -> Self {
        Self::start().then_copy(from, src, dest, options)
    }

    /// Then copies `src` of `from` to `dest`.
    pub fn then_copy(self, from: &State, src: &str, dest: &str, options: CopyOptions) -> Self {
        self.push(
            pb::file_action::Action::Copy(pb::FileActionCopy {
                src: src.to_owned(),
                dest: dest.to_owned(),
                owner: options.owner.as_ref().map(Chown::to_pb),
                mode: match (&options.mode_str, options.mode) {
                    // BuildKit leaves the numeric mode at zero when a mode string is given.
                    (Some(_), _) => 0,
                    (None, mode) => mode.unwrap_or(-1),
                },
                follow_symlink: options.follow_symlink,
                dir_copy_contents: options.dir_copy_contents,
                attempt_unpack_docker_compatibility: options.attempt_unpack_docker_compatibility,
                create_dest_path: options.create_dest_path,
                allow_wildcard: options.allow_wildcard,
                allow_empty_wildcard: options.allow_empty_wildcard,
                timestamp: options.timestamp.unwrap_or(-1),
                include_patterns: options.include_patterns,
                exclude_patterns: options.exclude_patterns,
                mode_str: options.mode_str.unwrap_or_default(),
                required_paths: options.required_paths,
                ..Default::default()
            }),
            Some(from.clone()),
        )
    }
}
