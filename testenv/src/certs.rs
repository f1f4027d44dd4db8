//! The certificates of the test control plane, generated in-process (rcgen,
//! ECDSA P-256): a CA, the apiserver's serving certificate, an admin client
//! certificate and the service-account signing key pair. Nothing is reused
//! between runs, so nothing on disk has to be trusted or cleaned up.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{Error, Result};

/// Paths of the PEM files written by [`generate`].
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub apiserver_cert: PathBuf,
    pub apiserver_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    /// Signs service-account tokens (apiserver) and legacy token secrets
    /// (controller-manager).
    pub sa_key: PathBuf,
    /// Verifies service-account tokens (apiserver).
    pub sa_pub: PathBuf,
    /// The real node's kubelet: `system:node:<name>` in `system:nodes`, as
    /// the Node authorizer expects.
    pub kubelet_cert: PathBuf,
    pub kubelet_key: PathBuf,
    /// The real node's kube-proxy: `system:kube-proxy`, bound to
    /// `system:node-proxier` by the default RBAC policy.
    pub kube_proxy_cert: PathBuf,
    pub kube_proxy_key: PathBuf,
}

/// Names the apiserver answers to: loopback for us, the in-cluster service
/// names and its ClusterIP (first address of 10.96.0.0/16) for completeness.
const APISERVER_NAMES: &[&str] = &[
    "127.0.0.1",
    "localhost",
    "10.96.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

fn rcgen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |e| Error::failed(format!("generating the {what}"), e)
}

/// Writes a fresh CA, serving, admin and service-account keys into `dir`.
pub fn generate(dir: &Path) -> Result<Pki> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let pki = Pki {
        dir: dir.to_path_buf(),
        ca_cert: dir.join("ca.crt"),
        ca_key: dir.join("ca.key"),
        apiserver_cert: dir.join("apiserver.crt"),
        apiserver_key: dir.join("apiserver.key"),
        admin_cert: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        sa_key: dir.join("sa.key"),
        sa_pub: dir.join("sa.pub"),
        kubelet_cert: dir.join("kubelet.crt"),
        kubelet_key: dir.join("kubelet.key"),
        kube_proxy_cert: dir.join("kube-proxy.crt"),
        kube_proxy_key: dir.join("kube-proxy.key"),
    };

    let ca_key = KeyPair::generate().map_err(rcgen_err("CA key"))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err("CA"))?;
    ca.distinguished_name
        .push(DnType::CommonName, "dojo-test-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(rcgen_err("CA"))?;
    write(&pki.ca_cert, &ca_cert.pem())?;
    write(&pki.ca_key, &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().map_err(rcgen_err("apiserver key"))?;
    let names: Vec<String> = APISERVER_NAMES.iter().map(|s| s.to_string()).collect();
    let mut serving = CertificateParams::new(names).map_err(rcgen_err("apiserver certificate"))?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = serving
        .signed_by(&key, &issuer)
        .map_err(rcgen_err("apiserver certificate"))?;
    write(&pki.apiserver_cert, &cert.pem())?;
    write(&pki.apiserver_key, &key.serialize_pem())?;

    // O=system:masters: bound to cluster-admin by the default RBAC policy.
    client_cert(
        &issuer,
        "dojo-admin",
        Some("system:masters"),
        &pki.admin_cert,
        &pki.admin_key,
    )?;
    let node_user = format!("system:node:{}", crate::node::NODE_NAME);
    client_cert(
        &issuer,
        &node_user,
        Some("system:nodes"),
        &pki.kubelet_cert,
        &pki.kubelet_key,
    )?;
    client_cert(
        &issuer,
        "system:kube-proxy",
        None,
        &pki.kube_proxy_cert,
        &pki.kube_proxy_key,
    )?;

    let sa = KeyPair::generate().map_err(rcgen_err("service-account key"))?;
    write(&pki.sa_key, &sa.serialize_pem())?;
    write(&pki.sa_pub, &sa.public_key_pem())?;
    Ok(pki)
}

/// A client certificate for user `cn` in group `org`, signed by the CA.
fn client_cert(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    org: Option<&str>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<()> {
    let key = KeyPair::generate().map_err(rcgen_err("client key"))?;
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err("client certificate"))?;
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(org) = org {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params
        .signed_by(&key, issuer)
        .map_err(rcgen_err("client certificate"))?;
    write(cert_path, &cert.pem())?;
    write(key_path, &key.serialize_pem())
}

fn write(path: &Path, pem: &str) -> Result<()> {
    std::fs::write(path, pem).map_err(Error::io(path))
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_every_file_as_pem() {
        let dir = tempfile::tempdir().unwrap();
        let pki = super::generate(dir.path()).unwrap();
        for (path, tag) in [
            (&pki.ca_cert, "CERTIFICATE"),
            (&pki.apiserver_cert, "CERTIFICATE"),
            (&pki.admin_cert, "CERTIFICATE"),
            (&pki.kubelet_cert, "CERTIFICATE"),
            (&pki.kube_proxy_cert, "CERTIFICATE"),
            (&pki.ca_key, "PRIVATE KEY"),
            (&pki.apiserver_key, "PRIVATE KEY"),
            (&pki.admin_key, "PRIVATE KEY"),
            (&pki.sa_key, "PRIVATE KEY"),
            (&pki.sa_pub, "PUBLIC KEY"),
        ] {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(
                text.starts_with(&format!("-----BEGIN {tag}-----")),
                "{} is not a PEM {tag}",
                path.display()
            );
        }
    }
}
