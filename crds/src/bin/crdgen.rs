//! Writes the CRD YAML: to stdout, or with `--write` over `crds/challenge.yaml`
//! (what `make crds` runs).

fn main() {
    let yaml = dojo_crds::crd_yaml();
    if std::env::args().any(|a| a == "--write") {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dojo_crds::schema::CRD_FILE);
        if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("crdgen: writing {}: {e}", path.display());
            std::process::exit(1);
        }
        println!("wrote {}", path.display());
    } else {
        print!("{yaml}");
    }
}
