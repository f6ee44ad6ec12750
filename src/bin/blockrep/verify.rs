//! `blockrep verify` and `blockrep send --verify`: the consistency check, as a table or JSON,
//! with its exit codes (0 consistent, 1 differences, 2 could not verify).

use std::path::PathBuf;
use std::process::ExitCode;

use blockrep::progress::human_bytes;
use blockrep::sender::{self, Control, Mode, Verification};
use blockrep::{cli, Error, ExtentSet, SendConfig};

use crate::{maps, say, send_config, ModeArg, SendArgs};

#[derive(clap::Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    send: SendArgs,
    /// Print the result as one JSON object: {"consistent": bool, "checked_bytes": N,
    /// "differences": [{"disk": "ID", "offset": N, "length": N}], ...}.
    #[arg(long)]
    json: bool,
    /// Send again exactly the ranges that differ, then verify them again.
    #[arg(long)]
    repair: bool,
    /// The ranges written on source disk ID while the verification runs (a change set, in
    /// any --bitmap format): differences there are reported as changed during the
    /// verification, not as corruption (repeatable).
    #[arg(long = "changed", value_name = "ID=FILE", value_parser = cli::parse_disk)]
    changed: Vec<(String, PathBuf)>,
}

/// Runs `blockrep verify`; errors are SMS.1511 and exit 2.
pub(crate) fn run(args: VerifyArgs) -> ExitCode {
    match verify(args) {
        Ok(code) => code,
        Err(e) => {
            let e = match e {
                e @ Error::Verify(_) => e,
                other => Error::Verify(other.user_line()),
            };
            eprintln!("{}", e.user_line());
            ExitCode::from(2)
        }
    }
}

fn verify(args: VerifyArgs) -> Result<ExitCode, Error> {
    if !matches!(args.send.mode, ModeArg::Used | ModeArg::Full) {
        return Err(Error::Config(
            "verify checks --mode used (the default) or --mode full".into(),
        ));
    }
    let (json, repair) = (args.json, args.repair);
    let era = args.send.era_block_size;
    let (config, _) = send_config(args.send)?;
    let changed = if args.changed.is_empty() {
        None
    } else {
        let mut sets = Vec::new();
        for spec in &config.disks {
            let size = blockrep_disk::SourceDisk::open(&spec.path)?.size();
            sets.push(match args.changed.iter().find(|(id, _)| *id == spec.id) {
                Some((_, file)) => maps::load_changes(file, size, era)?,
                None => ExtentSet::new(),
            });
        }
        Some(sets)
    };
    let result = runtime()?.block_on(async {
        if repair {
            sender::verify_and_repair(config, Control::new()).await
        } else {
            sender::verify(config, Control::new(), changed).await
        }
    })?;
    Ok(show(&result, json))
}

/// After `send --verify`: a used-mode check (full if the send was full).
pub(crate) fn after_send(mut config: SendConfig, json: bool) -> ExitCode {
    if config.mode != Mode::Full {
        config.mode = Mode::Used;
    }
    let result = runtime().and_then(|rt| rt.block_on(sender::verify(config, Control::new(), None)));
    match result {
        Ok(v) => show(&v, json),
        Err(e) => {
            eprintln!("{}", e.user_line());
            ExitCode::from(2)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Verify(format!("cannot start the I/O runtime: {e}")))
}

/// Prints the result; the exit code says whether the target is consistent.
fn show(v: &Verification, json: bool) -> ExitCode {
    if json {
        if let Ok(line) = serde_json::to_string(v) {
            say!("{line}");
        }
    } else {
        say!(
            "{}: checked {} in {:.2} s{}",
            if v.consistent {
                "consistent"
            } else {
                "DIFFERENT"
            },
            human_bytes(v.checked_bytes),
            v.elapsed_ms as f64 / 1000.0,
            if v.repaired_bytes > 0 {
                format!(", after sending {} again", human_bytes(v.repaired_bytes))
            } else {
                String::new()
            }
        );
        if !v.consistent {
            say!(
                "{} ranges differ ({}){}:",
                v.difference_count,
                human_bytes(v.differing_bytes),
                if (v.differences.len() as u64) < v.difference_count {
                    ", the first listed"
                } else {
                    ""
                }
            );
            for d in &v.differences {
                say!("  disk {} offset {} length {}", d.disk, d.offset, d.length);
            }
        }
        if !v.changed_during_verification.is_empty() {
            say!("changed on the source during the verification (the next sync round sends them):");
            for d in &v.changed_during_verification {
                say!("  disk {} offset {} length {}", d.disk, d.offset, d.length);
            }
        }
    }
    if v.consistent {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
