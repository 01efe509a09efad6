//! `netverdict certs`: a CA and the certificates a try-out install needs (the
//! API server's, one per collector node, a reader's), written as
//! cert-manager-shaped directories (`tls.crt`, `tls.key`, `ca.crt`); see
//! `netverdict_tls::certs`. Run again with more nodes: the CA in the
//! directory is reused.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use netverdict_tls::certs::{PkiOptions, write_pki};

#[derive(Args, Debug)]
pub struct CertsArgs {
    /// The directory to write into (created if missing; a CA already there,
    /// ca.crt and ca.key, is reused).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The collector nodes, comma-separated: one certificate each, with
    /// CN = the node name and O = netverdict:collectors.
    #[arg(long, value_name = "NODE,...", value_delimiter = ',')]
    nodes: Vec<String>,
    /// The namespace of the API server's Service (for its DNS names).
    #[arg(long, default_value = "netverdict")]
    namespace: String,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The reader certificate's CN (its O is netverdict:readers).
    #[arg(long, default_value = "netverdict-reader")]
    reader: String,
    /// Days the certificates are valid (the CA: ten times as long).
    #[arg(long, default_value_t = 365)]
    days: u32,
}

pub fn run(args: CertsArgs) -> Result<()> {
    let pki = write_pki(
        &args.out,
        &PkiOptions {
            nodes: args.nodes,
            namespace: args.namespace,
            cluster_domain: args.cluster_domain,
            reader: args.reader,
            days: args.days,
        },
    )
    .with_context(|| format!("writing certificates into {}", args.out.display()))?;
    let ca = pki.ca_cert.display();
    println!("{} CA: {ca}", if pki.ca_reused { "reused" } else { "new" });
    let show = |what: &str, bundle: &netverdict_tls::certs::Bundle| {
        println!(
            "{what}: {}/{{tls.crt,tls.key,ca.crt}}",
            bundle.dir.display()
        );
    };
    show("API server", &pki.api);
    for (node, bundle) in &pki.collectors {
        show(&format!("collector {node}"), bundle);
    }
    show("reader", &pki.reader);
    let api = &pki.api;
    let reader = &pki.reader;
    println!(
        "\nnetverdict api --tls-cert {} --tls-key {} --tls-client-ca {}",
        api.cert.display(),
        api.key.display(),
        api.ca.display()
    );
    if let Some((node, bundle)) = pki.collectors.first() {
        println!(
            "netverdict collector --node-name {node} --export https://netverdict-api:4255 \\\n    --tls-cert {} --tls-key {} --tls-ca {} --tls-client-ca {}",
            bundle.cert.display(),
            bundle.key.display(),
            bundle.ca.display(),
            bundle.ca.display()
        );
    }
    println!(
        "netverdict denied --tls-ca {} --tls-cert {} --tls-key {}",
        reader.ca.display(),
        reader.cert.display(),
        reader.key.display()
    );
    Ok(())
}
