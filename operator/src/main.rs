//! `dojo-operator`: the Challenge controller (filled by the operator issue).
fn main() {
    eprintln!("dojo-operator: not built yet; see the operator issue");
    std::process::exit(2);
}
