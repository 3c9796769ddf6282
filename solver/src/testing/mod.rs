//! Test doubles of the traits this crate owns, for this crate's tests and for any crate that
//! solves LLB in its tests: [`FakeExecutor`] for [`Executor`]. Compiled for this crate's own
//! tests and under the `testing` feature (its integration tests enable it through a
//! dev-dependency on the crate itself). A fake of another trait owned here goes here, and so
//! do generators of arbitrary input ([`arbitrary_definition`]).

mod arbitrary;

pub use arbitrary::arbitrary_definition;

use std::sync::{Arc, Mutex, PoisonError};

use futures::future::{BoxFuture, FutureExt};

use crate::{ExecRequest, ExecStatus, Executor, OpError, OutputSink};

/// An [`Executor`] that starts no process: it keeps every request it gets, writes the output
/// it was given to the step's sink, and ends the way it was told (exit code 0 by default).
///
/// ```
/// use kiln_solver::testing::FakeExecutor;
/// use kiln_solver::ExecStatus;
///
/// let executor = FakeExecutor::default().status(ExecStatus::Code(3)).output(2, "oops\n");
/// assert!(executor.requests().is_empty());
/// let refusing = FakeExecutor::refusing("nothing runs in this test");
/// # let _ = refusing;
/// ```
#[derive(Clone, Debug)]
pub struct FakeExecutor {
    requests: Arc<Mutex<Vec<ExecRequest>>>,
    outcome: Outcome,
    output: Vec<(u8, Vec<u8>)>,
}

#[derive(Clone, Debug)]
enum Outcome {
    Status(ExecStatus),
    Refuse(String),
}

impl Default for FakeExecutor {
    fn default() -> Self {
        Self {
            requests: Arc::default(),
            outcome: Outcome::Status(ExecStatus::Code(0)),
            output: Vec::new(),
        }
    }
}

impl FakeExecutor {
    /// An executor whose every run fails with `message`, for tests in which nothing may run.
    pub fn refusing(message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Refuse(message.into()),
            ..Self::default()
        }
    }

    /// Every run ends with `status`.
    pub fn status(mut self, status: ExecStatus) -> Self {
        self.outcome = Outcome::Status(status);
        self
    }

    /// Every run writes `data` to stream `stream` (1 stdout, 2 stderr) before it ends; calls
    /// add up, in order.
    pub fn output(mut self, stream: u8, data: impl Into<Vec<u8>>) -> Self {
        self.output.push((stream, data.into()));
        self
    }

    /// The requests run so far, in order (clones of this executor share them).
    pub fn requests(&self) -> Vec<ExecRequest> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Executor for FakeExecutor {
    fn run(
        &self,
        request: ExecRequest,
        output: OutputSink,
    ) -> BoxFuture<'static, Result<ExecStatus, OpError>> {
        let outcome = match &self.outcome {
            Outcome::Status(status) => {
                self.requests
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(request);
                for (stream, data) in &self.output {
                    output(*stream, data);
                }
                Ok(*status)
            }
            Outcome::Refuse(message) => Err(OpError::from(message.clone())),
        };
        futures::future::ready(outcome).boxed()
    }
}
