//! `--speed-limit`: rules from the command line or a file, re-read when the file changes or
//! on SIGHUP, applied to the running transfer within a second.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use blockrep::throttle::Throttle;
use blockrep::Error;
use blockrep_rate::Rules;
use tracing::{info, warn};

/// Where the rules come from.
pub enum Source {
    Text(String),
    File(PathBuf),
}

impl Source {
    pub fn parse(arg: &str) -> Self {
        match arg.strip_prefix('@') {
            Some(path) => Self::File(PathBuf::from(path)),
            None => Self::Text(arg.to_owned()),
        }
    }
}

/// The task-wide settings applied around every rule set.
#[derive(Clone, Copy)]
pub struct Defaults {
    pub default_mbps: u32,
    pub threshold: Option<f64>,
}

fn load(source: &Source, d: Defaults) -> Result<Rules, Error> {
    let text = match source {
        Source::Text(t) => t.clone(),
        Source::File(p) => std::fs::read_to_string(p).map_err(|e| {
            Error::Config(format!(
                "cannot read the speed-limit file {}: {e}",
                p.display()
            ))
        })?,
    };
    Ok(Rules::parse(&text)?.with_defaults(d.default_mbps, d.threshold))
}

/// Builds the task's throttle; for a file, starts a thread that re-reads it when it changes
/// (checked twice a second) and on SIGHUP. A file that stops parsing keeps the last good rules.
pub fn throttle(source: Option<Source>, d: Defaults) -> Result<Arc<Throttle>, Error> {
    let rules = match &source {
        Some(s) => load(s, d)?,
        None => Rules::unlimited().with_defaults(d.default_mbps, d.threshold),
    };
    let throttle = Throttle::new(rules);
    if let Some(Source::File(path)) = source {
        let hup = Arc::new(AtomicBool::new(false));
        if let Err(e) = signal_hook_thread(hup.clone()) {
            warn!("SIGHUP will not reload the speed limits: {e}");
        }
        let t = throttle.clone();
        std::thread::Builder::new()
            .name("blockrep-limits".into())
            .spawn(move || watch(&path, d, &t, &hup))
            .map_err(|e| Error::Config(format!("cannot watch the speed-limit file: {e}")))?;
    }
    Ok(throttle)
}

fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn watch(path: &PathBuf, d: Defaults, throttle: &Throttle, hup: &AtomicBool) {
    let source = Source::File(path.clone());
    let mut seen = stamp(path);
    loop {
        // Ten short naps: a SIGHUP is taken within 50 ms, a file change within 500 ms.
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(50));
            if hup.swap(false, Relaxed) {
                seen = None;
                break;
            }
        }
        let now = stamp(path);
        if now == seen {
            continue;
        }
        seen = now;
        match load(&source, d) {
            Ok(rules) => {
                info!("speed limits reloaded from {}", path.display());
                throttle.set_rules(rules);
            }
            Err(e) => warn!("{}; keeping the previous speed limits", e.user_line()),
        }
    }
}

/// Sets `flag` on every SIGHUP, from a thread of its own.
fn signal_hook_thread(flag: Arc<AtomicBool>) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut hup = {
        let _guard = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?
    };
    std::thread::Builder::new()
        .name("blockrep-sighup".into())
        .spawn(move || {
            rt.block_on(async {
                while hup.recv().await.is_some() {
                    flag.store(true, Relaxed);
                }
            })
        })?;
    Ok(())
}
