//! Certificates made by the `openssl` CLI (Debian package `openssl`), to
//! check that files from another PKI than netverdict's own work.

use std::path::Path;
use std::process::Command;

/// Runs `openssl ARGS` in `dir`; fails the test with openssl's stderr.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("the openssl CLI (Debian package openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA in `dir`: `ca.key` (RSA 2048, PKCS#1 when `traditional`)
/// and `ca.crt` for `subject` (e.g. `/CN=test CA`), valid 2 days.
pub fn ca(dir: &Path, subject: &str, traditional: bool) {
    let mut genrsa = vec!["genrsa"];
    if traditional {
        genrsa.push("-traditional");
    }
    genrsa.extend(["-out", "ca.key", "2048"]);
    openssl(dir, &genrsa);
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            subject,
            "-days",
            "2",
            "-sha256",
            "-out",
            "ca.crt",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// Signs `NAME.csr` in `dir` with its CA (`ca.crt`, `ca.key`) into
/// `NAME.crt`, with these X.509 v3 extensions (one `key=value` a line).
pub fn sign(dir: &Path, name: &str, serial: &str, extensions: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), extensions)
        .unwrap_or_else(|e| panic!("writing {name}.ext: {e}"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            serial,
            "-days",
            "2",
            "-sha256",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}
