//! Prints what nm-multiwan reads from NetworkManager, as JSON on stdout:
//! the uplinks (default), or with `connectivity` each device's `Ip4Connectivity`.
//! Logs go to stderr (`RUST_LOG=debug` for one line per device).
//! Used by the `nm_read` integration test; handy for debugging by hand too.

use std::io::IsTerminal;
use std::process::ExitCode;

use nm_multiwan::nm::NetworkManager;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let connectivity = std::env::args().nth(1).as_deref() == Some("connectivity");
    let result = async {
        let nm = NetworkManager::connect().await?;
        if connectivity {
            Ok(serde_json::to_string(&nm.ip4_connectivity().await?).expect("map serializes"))
        } else {
            Ok(serde_json::to_string(&nm.uplinks().await?).expect("uplinks serialize"))
        }
    }
    .await;
    match result {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let e: nm_multiwan::Error = e;
            eprintln!("nm_uplinks: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
