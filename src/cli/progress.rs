//! Progress bars for the long commands (`inbox replay --failed`, `inbox prune`, `simulate`,
//! `readiness-bench seed`). A bar is drawn on standard error only when it is a terminal (and
//! `TERM` is not `dumb`); otherwise it stays hidden, so redirected output is exactly the
//! commands' JSON on standard output. Print results through [`ProgressBar::suspend`].

use std::time::Duration;

pub use indicatif::ProgressBar;
use indicatif::{ProgressDrawTarget, ProgressStyle};

/// A bar counting up to `total`, labelled `message`; hidden unless standard error is a terminal.
pub fn bar(total: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed}, about {eta} left)")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_message(message);
    if !bar.is_hidden() {
        // Elapsed time and the estimate move on while one slow step runs.
        bar.enable_steady_tick(Duration::from_millis(250));
    }
    bar
}
