//! Nothing to do at build time; kept so that the release build's linking
//! stays a documented decision: every executable is position-independent
//! (PIE), so its code and data are address-randomised like its libraries,
//! heap and stack. (Earlier releases linked the CLI position-dependent to
//! shave the exec plugin's start-up; the network-facing server and
//! connector are the same executable, so that was a poor trade. The warm
//! path's start-up is kept small instead: see benches/exec_plugin.sh.)
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
}
