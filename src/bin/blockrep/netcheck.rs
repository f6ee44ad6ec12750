//! `blockrep netcheck`: the network check against a receiver, as a table or JSON.

use std::process::ExitCode;
use std::time::Duration;

use blockrep::netcheck::{self, Evaluation, NetcheckConfig, NetworkCheckInfo};
use blockrep::Error;

use crate::{say, ConnectionArgs, LimitArgs};

#[derive(clap::Args)]
pub(crate) struct NetcheckArgs {
    #[command(flatten)]
    conn: ConnectionArgs,
    #[command(flatten)]
    limits: LimitArgs,
    /// How long the bandwidth burst lasts, seconds (1 to 60).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    seconds: u64,
    /// Small frames timed one at a time for the latency figures (2 to 1000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pings: u32,
    /// Print one JSON object with the service's NetworkCheckInfo field names
    /// (network_delay, network_jitter, migration_speed, loss_percentage, cpu_usage,
    /// mem_usage, evaluation_result) and the details.
    #[arg(long)]
    json: bool,
}

/// Runs the check; exit 0 when the verdict is good or fair, 1 when poor.
pub(crate) fn run(args: NetcheckArgs) -> Result<ExitCode, Error> {
    let json = args.json;
    let mut config = args.conn.config(Vec::new(), &args.limits)?;
    config.session_id = format!("netcheck-{}", std::process::id());
    let check = NetcheckConfig {
        pings: args.pings,
        burst: Duration::from_secs(args.seconds),
        ..NetcheckConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the I/O runtime: {e}")))?;
    let info = rt.block_on(netcheck::netcheck(&config, &check))?;
    if json {
        say!(
            "{}",
            serde_json::to_string(&info).map_err(|e| Error::Config(e.to_string()))?
        );
    } else {
        say!("{}", table(&info, &config.target));
    }
    Ok(if info.evaluation_result == Evaluation::Poor {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The result for people.
fn table(i: &NetworkCheckInfo, target: &str) -> String {
    let limit = if i.speed_limit > 0.0 {
        format!(" (speed limit {:.0} Mbit/s)", i.speed_limit)
    } else {
        String::new()
    };
    let mut out = format!(
        "network check of {target}\n\
         \x20 round trip      {:>9.2} ms median, {:.2} ms p99 (idle); {:.2} ms under load\n\
         \x20 jitter          {:>9.2} ms\n\
         \x20 bandwidth       {:>9.1} Mbit/s{limit} ({} in {:.1} s)\n\
         \x20 loss            {:>9.2} % of bytes retransmitted ({} segments)\n\
         \x20 agent           {:>9.1} % CPU, {:.0} MB memory\n\
         \x20 verdict         {:>9}",
        i.network_delay,
        i.network_delay_p99,
        i.loaded_delay,
        i.network_jitter,
        i.migration_speed,
        blockrep::progress::human_bytes(i.burst_bytes),
        i.burst_seconds,
        i.loss_percentage,
        i.retransmissions,
        i.cpu_usage,
        i.mem_usage,
        i.evaluation_result.as_str(),
    );
    for reason in &i.evaluation_reasons {
        out.push_str(&format!("\n  - {reason}"));
    }
    out
}
