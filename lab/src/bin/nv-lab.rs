//! `nv-lab`: the lab crate's own small binary, for its tests and for running
//! without the `netverdict` CLI.
//!
//! - `nv-lab serve SPEC_JSON`: run pod servers (what `lab up` starts);
//! - `nv-lab up NAME PATH...`: bring a lab up, print `up`, and
//!   wait forever (the tests kill it with SIGKILL to rehearse a crashed lab).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") if args.len() == 3 => {
            let spec: netverdict_lab::serve::ServeSpec = match serde_json::from_str(&args[2]) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("nv-lab serve: invalid spec: {e}");
                    return ExitCode::from(2);
                }
            };
            let Err(e) = netverdict_lab::serve::serve(&spec);
            eprintln!("nv-lab serve: {e}");
            ExitCode::from(1)
        }
        Some("up") if args.len() >= 4 => {
            let exe = std::env::current_exe()
                .map(|p| p.into_os_string())
                .unwrap_or_default();
            let options = netverdict_lab::LabOptions::new(&args[2], vec![exe, "serve".into()]);
            match netverdict_lab::Lab::up(&args[3..], &options) {
                Ok(_) => {
                    println!("up");
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => {
                    eprintln!("nv-lab up: {e}");
                    ExitCode::from(1)
                }
            }
        }
        _ => {
            eprintln!("usage: nv-lab serve SPEC_JSON | nv-lab up NAME PATH...");
            ExitCode::from(2)
        }
    }
}
