// Placeholder so the workspace manifest parses; the operator benchmark replaces it.
fn main() {}
