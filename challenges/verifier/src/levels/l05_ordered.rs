//! Level 5 — being written; `dojo play 5` says so until its scenario lands.

use super::Ctx;
use crate::platform::Platform;
use crate::report::Check;

pub async fn run<P: Platform>(ctx: &mut Ctx<'_, P>) {
    ctx.judge(Check::error("playable", "the level has a scenario", "level 5 is being written"));
}
