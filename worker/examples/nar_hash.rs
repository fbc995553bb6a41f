//! Print the NAR hash and size of a path, as `sha256:<nix32> <size>`: the
//! `NarHash` and `NarSize` a narinfo would state. Used by `benches/nar.sh`;
//! it adds no command-line surface to the worker itself.
//!
//! Usage: `cargo run --release -p provenix-worker --example nar_hash -- PATH`

use std::path::PathBuf;
use std::process::ExitCode;

use provenix_worker::nar;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        eprintln!("usage: nar_hash PATH");
        return ExitCode::from(2);
    };
    let path = PathBuf::from(path);
    match nar::hash_path(&path) {
        Ok(digest) => {
            println!("{} {}", digest.nar_hash(), digest.size);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nar_hash: {e}");
            ExitCode::FAILURE
        }
    }
}
