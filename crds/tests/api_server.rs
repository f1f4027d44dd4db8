//! The CRD against a real kube-apiserver: every sample is accepted and every
//! malformed Challenge is refused with the message its file expects, through
//! `kubectl apply` as a learner would run it.

use std::path::{Path, PathBuf};
use std::process::Command;

use dojo_testenv::ControlPlane;

mod common;
use common::yaml_files;

async fn plane() -> &'static ControlPlane {
    ControlPlane::shared()
        .await
        .unwrap_or_else(|e| panic!("starting the control plane: {e}"))
}

/// `kubectl apply` of one YAML document in `ns`: Ok(stdout) or Err(stderr).
fn kubectl_apply(cp: &ControlPlane, ns: &str, doc: &str, scratch: &Path) -> Result<String, String> {
    std::fs::write(scratch, doc).unwrap();
    let out = Command::new(cp.kubectl_path())
        .arg("--kubeconfig")
        .arg(cp.kubeconfig_path())
        .args(["apply", "-n", ns, "-f"])
        .arg(scratch)
        .output()
        .expect("kubectl runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test]
async fn samples_are_accepted_and_malformed_challenges_refused() {
    let cp = plane().await;
    let _logs = cp.logs_on_panic();
    dojo_crds::install(cp.client()).await.unwrap();
    let ns = cp.new_namespace("crd").await.unwrap();
    let scratch = tempfile_path();

    for f in yaml_files("samples") {
        let doc = std::fs::read_to_string(&f).unwrap();
        if let Err(e) = kubectl_apply(cp, &ns, &doc, &scratch) {
            panic!("{} refused: {e}", f.display());
        }
    }

    let mut wrong = Vec::new();
    let files = yaml_files("tests/invalid");
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .expect("a `# expect:` first line")
            .trim()
            .to_string();
        let docs: Vec<&str> = text.split("\n---\n").collect();
        let (last, before) = docs.split_last().unwrap();
        for doc in before {
            if let Err(e) = kubectl_apply(cp, &ns, doc, &scratch) {
                wrong.push(format!(
                    "{}: the accepted first document was refused: {e}",
                    f.display()
                ));
            }
        }
        match kubectl_apply(cp, &ns, last, &scratch) {
            Ok(out) => wrong.push(format!("{}: accepted ({})", f.display(), out.trim())),
            Err(e) if e.contains(&expect) => eprintln!(
                "refused {}:\n  {}",
                f.file_name().unwrap().to_string_lossy(),
                e.trim()
            ),
            Err(e) => wrong.push(format!(
                "{}: refused, but without {expect:?}: {e}",
                f.display()
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} malformed Challenges misjudged:\n{}",
        wrong.len(),
        files.len(),
        wrong.join("\n")
    );
}

fn tempfile_path() -> PathBuf {
    std::env::temp_dir().join(format!("dojo-crd-test-{}.yaml", std::process::id()))
}
