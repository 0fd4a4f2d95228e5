//! `arborctl`: operate an arbor host — through its admin endpoint while it runs, or on its
//! data directory while it is stopped (`--data-dir`).
//!
//! Long because it is the CLI's whole surface: the clap definitions and, per command, how its
//! answer is printed for people and as JSON; every operation itself goes through one
//! `arbor::admin::Admin` call.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbor::admin::api::{
    AgentRow, ApiError, ArchiveRow, CheckpointRow, Cluster, Evaluation, LineageRow, ModuleRow,
    RestoreSource, Status, Submitter, WalRecord, WalVerify,
};
use arbor::admin::{
    Admin, AdminError, AdminToken, Candidate, HttpAdmin, NEEDS_RUNNING_NODE, Operator,
};
use arbor::agent::AfterRestore;
use arbor::evolve::{Direction, LoopSpec, LoopStatus, SourceKind};
use arbor::shadow::{EvaluationOptions, IgnoreRule, Objective, ShadowPlace};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  the operation failed (or `wal verify` found damage, `evolve --wait` ended without promotion)
  2  bad usage or a bad request
  3  no such agent, checkpoint, module or evaluation
  4  unauthorized (no token, or a wrong one)
  5  unavailable: the host cannot be reached, or (offline) a running host holds the directory
  6  not now: the agent or evaluation is in a state that does not allow it
  7  not in cluster mode (`cluster` commands on a host that runs on its own)";

/// Operate an arbor host: agents, checkpoints, the WAL, modules and evolution.
#[derive(Parser)]
#[command(name = "arborctl", version, after_help = EXIT_CODES)]
struct Cli {
    /// The host's admin endpoint (host:port on loopback).
    #[arg(
        long,
        env = "ARBOR_ADMIN",
        default_value = "127.0.0.1:9465",
        global = true
    )]
    admin: String,
    /// A file holding the admin token (mode 0600).
    #[arg(long, env = "ARBOR_ADMIN_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// The admin token itself (prefer --token-file: the environment can leak).
    #[arg(long, env = "ARBOR_ADMIN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Work on a stopped host's data directory instead of asking a running host.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Print JSON (for scripts) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The host at a glance: agents by state, WAL, vault, evaluations.
    Status,
    /// Every agent: supervisor, state, module, last input, restarts (and why a quarantined
    /// or terminated one is not running).
    Agents,
    /// One agent (needs a running host).
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Stored checkpoints.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// The write-ahead log.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Stored Wasm modules.
    #[command(subcommand)]
    Module(ModuleCommand),
    /// Evolution: candidates, shadows, verdicts, promotion and rollback (needs a running host).
    #[command(subcommand)]
    Evolve(EvolveCommand),
    /// Cluster mode: nodes, owners and leases (needs a running node; any node answers).
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// The nodes (live, draining, heartbeat age, agents owned) and every agent (state, owner,
    /// lease epoch and time left, where placement puts it), as the asked node sees them.
    Status,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Forgets an agent that is not running — quarantined, terminated or stopped: its
    /// registry record and checkpoints are deleted, so the name is free again.
    Remove { agent: String },
}

#[derive(Subcommand)]
enum CheckpointCommand {
    /// An agent's checkpoints, oldest first.
    List { agent: String },
    /// One checkpoint, with its state decoded.
    Show { agent: String, lsn: u64 },
    /// Writes a checkpoint to a verified export file.
    Export {
        agent: String,
        lsn: u64,
        /// The file to write.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Restores an agent from a stored checkpoint or an export file: the agent pauses, its
    /// state is restored, the inputs after it are replayed or discarded, and it resumes. A
    /// quarantined agent (its state could not be recovered) is rebuilt this way and started.
    Restore {
        agent: String,
        /// A stored checkpoint's LSN.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        lsn: Option<u64>,
        /// An export file.
        #[arg(long)]
        file: Option<PathBuf>,
        /// What to do with the inputs journaled after the checkpoint.
        #[arg(long, value_enum)]
        after: After,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum After {
    /// Replay them through the restored state (nothing acknowledged is lost).
    Replay,
    /// Drop them: the agent goes on from the checkpoint.
    Discard,
}

#[derive(Subcommand)]
enum WalCommand {
    /// Reads every segment and checks every frame.
    Verify,
    /// Decoded records.
    Inspect {
        /// From this LSN.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only this agent's.
        #[arg(long)]
        agent: Option<String>,
    },
}

#[derive(Subcommand)]
enum ModuleCommand {
    /// Stored modules.
    List,
    /// Checks, compiles and stores a module.
    Add { name: String, file: PathBuf },
}

#[derive(Subcommand)]
enum EvolveCommand {
    /// Admits a candidate for an agent and starts its evaluation (replay gate, then shadows
    /// on mirrored traffic).
    Start {
        agent: String,
        /// A stored module's hash.
        #[arg(long, conflicts_with = "wasm", required_unless_present = "wasm")]
        module: Option<String>,
        /// A Wasm file.
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// The candidate's label (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        evaluation: EvaluationArgs,
    },
    /// Submits a module as a candidate, with who brought it and why (kept in the lineage and
    /// the evolution archive), and starts its evaluation.
    Submit {
        agent: String,
        /// The Wasm file.
        file: PathBuf,
        /// Who submits it: a person or a program.
        #[arg(long)]
        author: String,
        /// What it is meant to change.
        #[arg(long)]
        description: String,
        /// The candidate's label (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        evaluation: EvaluationArgs,
    },
    /// The agent's evolution archive as a tree: every candidate under its parent, with its
    /// origin, how far it got and what it measured.
    Tree { agent: String },
    /// The continuous evolution loop: cycles of candidates from its sources, each through the
    /// arbiter (promotion as the host's approval mode allows), each cycle reported.
    #[command(subcommand)]
    Loop(LoopCommand),
    /// Accepts a rejected candidate whose differences are intended (it then awaits
    /// promotion); the reason goes into the lineage.
    Accept {
        agent: String,
        #[arg(long)]
        reason: String,
    },
    /// An agent's current or last evaluation.
    Status {
        agent: String,
        /// Wait until it settles, showing progress.
        #[arg(long)]
        wait: bool,
    },
    /// Promotes the approved candidate.
    Promote { agent: String },
    /// Rolls a watched promotion back.
    Rollback {
        agent: String,
        #[arg(long, default_value = "asked by an operator")]
        reason: String,
    },
    /// Stops an evaluation (or a watch; the promotion stays).
    Cancel { agent: String },
    /// The agent's lineage and the evidence behind each verdict.
    History { agent: String },
}

#[derive(Subcommand)]
enum LoopCommand {
    /// Starts a loop for an agent.
    Start {
        agent: String,
        /// Where candidates come from: `params` (a genetic search over the parameters the
        /// agent's module declares) or `placebo`; repeatable (default: params).
        #[arg(long = "source", value_name = "SOURCE")]
        sources: Vec<String>,
        /// Candidates per cycle at most.
        #[arg(long, default_value_t = 4)]
        candidates: usize,
        /// The archive score the search learns from: `fuel`, `latency`, `memory`,
        /// `score.JUDGE`.
        #[arg(long, default_value = "fuel")]
        fitness: String,
        /// Higher fitness is better (default: lower is better).
        #[arg(long)]
        higher: bool,
        /// Configurations per generation of the parameter search.
        #[arg(long, default_value_t = 8)]
        population: usize,
        /// Seeds the search and the choice of parents.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Milliseconds between cycles.
        #[arg(long, default_value_t = 1_000)]
        pause_ms: u64,
        /// Stop after this many cycles (default: until stopped).
        #[arg(long)]
        cycles: Option<u32>,
        #[command(flatten)]
        evaluation: EvaluationArgs,
    },
    /// Stops an agent's loop (an evaluation it started goes on to its verdict).
    Stop { agent: String },
    /// An agent's loop and its last cycle's report.
    Status {
        agent: String,
        /// Wait until the loop stops, showing its cycles.
        #[arg(long)]
        wait: bool,
    },
}

/// How a candidate is evaluated (`evolve start` and `evolve submit`).
#[derive(clap::Args)]
struct EvaluationArgs {
    /// A part of replies that may differ by design, as a dot path (`*.generated_at`);
    /// repeatable.
    #[arg(long = "ignore", value_name = "PATH")]
    ignore: Vec<String>,
    /// What the candidate must improve or hold: MEASURE:GOAL[:BY], the measure `fuel`,
    /// `latency`, `memory` or `score.JUDGE`, the goal `better` or `no-worse`
    /// (`fuel:better:0.1`); repeatable.
    #[arg(long = "objective", value_name = "SPEC")]
    objectives: Vec<String>,
    /// The host's comparator that grades reply differences (intended changes).
    #[arg(long)]
    comparator: Option<String>,
    /// Where the shadows run: `here`, `elsewhere` (another live node) or a node's name.
    #[arg(long, default_value = "here")]
    shadows: String,
    /// Wait until a verdict (or the end), showing progress.
    #[arg(long)]
    wait: bool,
}

impl EvaluationArgs {
    fn options(&self) -> Result<EvaluationOptions, Failure> {
        Ok(EvaluationOptions {
            ignore: self
                .ignore
                .iter()
                .map(|path| IgnoreRule::path(path))
                .collect(),
            objectives: self
                .objectives
                .iter()
                .map(|spec| spec.parse::<Objective>())
                .collect::<Result<_, _>>()
                .map_err(|e| fail(2, e.to_string()))?,
            comparator: self.comparator.clone(),
            shadows: match self.shadows.as_str() {
                "here" => ShadowPlace::Here,
                "elsewhere" => ShadowPlace::Elsewhere,
                node => ShadowPlace::Node(node.to_string()),
            },
            ..EvaluationOptions::default()
        })
    }
}

/// A Wasm file as a candidate, labelled `name` or by the file's name.
fn file_candidate(file: &Path, name: &Option<String>) -> Result<Candidate, Failure> {
    Ok(Candidate::Bytes {
        name: name.clone().unwrap_or_else(|| {
            file.file_stem()
                .map_or_else(|| "candidate".into(), |s| s.to_string_lossy().into())
        }),
        bytes: read(file)?,
    })
}

/// What a command failed with, and its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl From<AdminError> for Failure {
    fn from(error: AdminError) -> Self {
        Failure {
            code: code_of(error.kind()),
            message: error.to_string(),
        }
    }
}

fn code_of(kind: &str) -> u8 {
    match kind {
        "bad_request" => 2,
        "not_found" => 3,
        "unauthorized" => 4,
        "busy" => 5,
        "conflict" => 6,
        "not_clustered" => 7,
        _ => 1,
    }
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            if cli.json {
                let body = ApiError {
                    kind: kind_of(failure.code).into(),
                    error: failure.message,
                };
                println!(
                    "{}",
                    serde_json::to_string_pretty(&body).unwrap_or_default()
                );
            } else {
                eprintln!("arborctl: {}", failure.message);
            }
            ExitCode::from(failure.code)
        }
    }
}

fn kind_of(code: u8) -> &'static str {
    match code {
        2 => "bad_request",
        3 => "not_found",
        4 => "unauthorized",
        5 => "busy",
        6 => "conflict",
        7 => "not_clustered",
        _ => "failed",
    }
}

/// Who answers — a running host over HTTP, or the data directory in-process — and then the
/// command, once, through [`Admin`].
fn run(cli: &Cli) -> Result<u8, Failure> {
    let out = Output { json: cli.json };
    let Some(dir) = &cli.data_dir else {
        let admin = HttpAdmin::new(&cli.admin, token(cli)?);
        return tokio_runtime()?.block_on(command(&admin, &out, &cli.command));
    };
    if let Command::Cluster(_) = &cli.command {
        // Not even opened: a directory holds none of the cluster's state, and opening a
        // cluster node's directory offline would create a WAL in it.
        return Err(AdminError::Busy(NEEDS_RUNNING_NODE.into()).into());
    }
    if let Command::Wal(WalCommand::Verify) = &cli.command {
        // Without opening the log: opening refuses a damaged one, verify reports it.
        let progress = out.spinner("verifying the WAL");
        let report = Operator::wal_verify_offline(dir)?;
        progress.finish_and_clear();
        return wal_verified(&out, &report);
    }
    let runtime = tokio_runtime()?;
    runtime.block_on(async {
        let operator = Operator::offline(dir)?;
        command(&operator, &out, &cli.command).await
    })
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| fail(1, format!("tokio: {e}")))
}

/// The admin token: from its file, or as given.
fn token(cli: &Cli) -> Result<String, Failure> {
    match (&cli.token_file, &cli.token) {
        (Some(file), _) => Ok(AdminToken::from_file(file)?.expose().to_string()),
        (None, Some(token)) => Ok(token.clone()),
        (None, None) => Err(fail(
            4,
            "no admin token: give --token-file FILE (or ARBOR_ADMIN_TOKEN_FILE)",
        )),
    }
}

async fn command(admin: &impl Admin, out: &Output, command: &Command) -> Result<u8, Failure> {
    match command {
        Command::Status => out.show(&admin.status().await?, show_status),
        Command::Agents => out.show(&admin.agents().await?, |a| show_agents(a)),
        Command::Agent(AgentCommand::Remove { agent }) => {
            let removed = admin.agent_remove(agent).await?;
            out.show(&removed, |r| println!("removed {}", r.agent))
        }
        Command::Checkpoint(command) => checkpoint(admin, out, command).await,
        Command::Wal(WalCommand::Verify) => {
            let progress = out.spinner("verifying the WAL");
            let report = admin.wal_verify().await?;
            progress.finish_and_clear();
            wal_verified(out, &report)
        }
        Command::Wal(WalCommand::Inspect { from, limit, agent }) => {
            let records = admin.wal_records(*from, *limit, agent.as_deref()).await?;
            out.show(&records, |r| show_records(r))
        }
        Command::Module(ModuleCommand::List) => {
            out.show(&admin.modules().await?, |m| show_modules(m))
        }
        Command::Module(ModuleCommand::Add { name, file }) => {
            let module = admin.module_add(name, &read(file)?).await?;
            out.show(&vec![module], |m| show_modules(m))
        }
        Command::Evolve(command) => evolve(admin, out, command).await,
        Command::Cluster(ClusterCommand::Status) => {
            out.show(&admin.cluster_status().await?, show_cluster)
        }
    }
}

/// A WAL check shown; damage is exit code 1.
fn wal_verified(out: &Output, report: &WalVerify) -> Result<u8, Failure> {
    out.show(report, show_verify)?;
    Ok(if report.clean { 0 } else { 1 })
}

async fn checkpoint(
    admin: &impl Admin,
    out: &Output,
    command: &CheckpointCommand,
) -> Result<u8, Failure> {
    match command {
        CheckpointCommand::List { agent } => out.show(&admin.checkpoints(agent).await?, |list| {
            show_checkpoints(list)
        }),
        CheckpointCommand::Show { agent, lsn } => {
            let shown = admin.checkpoint_show(agent, *lsn).await?;
            out.show(&shown, |s| {
                show_checkpoints(std::slice::from_ref(&s.checkpoint));
                match &s.state {
                    Some(state) => println!(
                        "\nstate:\n{}",
                        serde_json::to_string_pretty(state).unwrap_or_default()
                    ),
                    None => println!("\nstate: not MessagePack ({} bytes)", s.checkpoint.bytes),
                }
            })
        }
        CheckpointCommand::Export {
            agent,
            lsn,
            out: path,
        } => {
            let row = admin.checkpoint_export(agent, *lsn, path).await?;
            out.show(&row, |row| {
                println!(
                    "exported {} checkpoint at LSN {} ({} bytes of state) to {}",
                    row.agent,
                    row.lsn,
                    row.bytes,
                    path.display()
                );
            })
        }
        CheckpointCommand::Restore {
            agent,
            lsn,
            file,
            after,
        } => {
            let after = match after {
                After::Replay => AfterRestore::Replay,
                After::Discard => AfterRestore::Discard,
            };
            let source = match (lsn, file) {
                (Some(lsn), _) => RestoreSource::Stored { lsn: *lsn },
                (None, Some(_)) => RestoreSource::File,
                (None, None) => return Err(fail(2, "give --lsn or --file")),
            };
            let progress = out.spinner(&format!("restoring {agent}"));
            let done = admin
                .restore(agent, &source, file.as_deref(), after)
                .await?;
            progress.finish_and_clear();
            out.show(&done, |d| {
                println!(
                    "restored {} from the checkpoint at LSN {} ({:?} after it: {} inputs \
                     replayed); paused {:.3} ms; new checkpoint at LSN {}",
                    d.agent,
                    d.from_lsn,
                    d.after,
                    d.replayed,
                    d.pause_us as f64 / 1000.0,
                    d.checkpoint_lsn
                );
            })
        }
    }
}

async fn evolve(admin: &impl Admin, out: &Output, command: &EvolveCommand) -> Result<u8, Failure> {
    let (status, wait) = match command {
        EvolveCommand::Start {
            agent,
            module,
            wasm,
            name,
            evaluation,
        } => {
            let options = evaluation.options()?;
            let candidate = match (module, wasm) {
                (Some(hash), _) => Candidate::stored(hash)?,
                (None, Some(file)) => file_candidate(file, name)?,
                (None, None) => return Err(fail(2, "give --module or --wasm")),
            };
            let status = admin.evolve_start(agent, candidate, options).await?;
            (status, evaluation.wait)
        }
        EvolveCommand::Submit {
            agent,
            file,
            author,
            description,
            name,
            evaluation,
        } => {
            if author.trim().is_empty() || description.trim().is_empty() {
                return Err(fail(2, "--author and --description must say something"));
            }
            let submitter = Submitter {
                author: author.clone(),
                description: description.clone(),
            };
            let options = evaluation.options()?;
            let candidate = file_candidate(file, name)?;
            let status = admin
                .evolve_submit(agent, candidate, &submitter, options)
                .await?;
            (status, evaluation.wait)
        }
        EvolveCommand::Tree { agent } => {
            return out.show(&admin.evolve_archive(agent).await?, |rows| show_tree(rows));
        }
        EvolveCommand::Loop(command) => return evolve_loop(admin, out, command).await,
        EvolveCommand::Accept { agent, reason } => {
            (admin.evolve_accept(agent, reason).await?, false)
        }
        EvolveCommand::Status { agent, wait } => (admin.evolve_status(agent).await?, *wait),
        EvolveCommand::Promote { agent } => {
            let progress = out.spinner(&format!("promoting a candidate of {agent}"));
            let status = admin.evolve_promote(agent).await?;
            progress.finish_and_clear();
            (status, false)
        }
        EvolveCommand::Rollback { agent, reason } => {
            let progress = out.spinner(&format!("rolling {agent} back"));
            let status = admin.evolve_rollback(agent, reason).await?;
            progress.finish_and_clear();
            (status, false)
        }
        EvolveCommand::Cancel { agent } => (admin.evolve_cancel(agent).await?, false),
        EvolveCommand::History { agent } => {
            return out.show(&admin.lineage(agent).await?, |h| show_history(h));
        }
    };
    let status = if wait {
        let progress = out.spinner("evaluating");
        let mut status = status;
        while !status.is_settled() {
            progress.set_message(evaluation_line(&status));
            tokio::time::sleep(Duration::from_millis(250)).await;
            status = admin.evolve_status(&status.agent).await?;
        }
        progress.finish_and_clear();
        status
    } else {
        status
    };
    out.show(&status, show_evaluation)?;
    let failed = wait
        && matches!(
            status.stage,
            arbor::shadow::Stage::Done(ref outcome)
                if !matches!(outcome, arbor::shadow::Outcome::Promoted)
        );
    Ok(u8::from(failed))
}

async fn evolve_loop(
    admin: &impl Admin,
    out: &Output,
    command: &LoopCommand,
) -> Result<u8, Failure> {
    let (status, wait) = match command {
        LoopCommand::Start {
            agent,
            sources,
            candidates,
            fitness,
            higher,
            population,
            seed,
            pause_ms,
            cycles,
            evaluation,
        } => {
            let sources = if sources.is_empty() {
                vec![SourceKind::Params]
            } else {
                sources
                    .iter()
                    .map(|s| s.parse::<SourceKind>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| fail(2, e.to_string()))?
            };
            let spec = LoopSpec {
                sources,
                candidates_per_cycle: *candidates,
                options: evaluation.options()?,
                fitness: fitness.clone(),
                direction: if *higher {
                    Direction::Higher
                } else {
                    Direction::Lower
                },
                population: *population,
                seed: *seed,
                pause_ms: *pause_ms,
                cycles: *cycles,
                ..LoopSpec::default()
            };
            (
                admin.evolve_loop_start(agent, &spec).await?,
                evaluation.wait,
            )
        }
        LoopCommand::Stop { agent } => (admin.evolve_loop_stop(agent).await?, false),
        LoopCommand::Status { agent, wait } => (admin.evolve_loop_status(agent).await?, *wait),
    };
    let status = if wait {
        let progress = out.spinner("evolving");
        let mut status = status;
        while status.running {
            progress.set_message(format!("{}: cycle {}", status.agent, status.cycles));
            tokio::time::sleep(Duration::from_millis(250)).await;
            status = admin.evolve_loop_status(&status.agent).await?;
        }
        progress.finish_and_clear();
        status
    } else {
        status
    };
    out.show(&status, show_loop)?;
    Ok(u8::from(status.error.is_some()))
}

fn show_loop(status: &LoopStatus) {
    println!(
        "{}: loop {}, {} cycle(s){}",
        status.agent,
        if status.running { "running" } else { "stopped" },
        status.cycles,
        status
            .error
            .as_deref()
            .map(|e| format!(", stopped by: {e}"))
            .unwrap_or_default()
    );
    if let Some(report) = status.reports.last() {
        println!();
        print!("{}", report.markdown());
    }
}

fn read(file: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(file).map_err(|e| fail(2, format!("{}: {e}", file.display())))
}

/// JSON or tables; progress on stderr for people only.
struct Output {
    json: bool,
}

impl Output {
    fn show<T: Serialize>(&self, value: &T, human: impl FnOnce(&T)) -> Result<u8, Failure> {
        if self.json {
            let text =
                serde_json::to_string_pretty(value).map_err(|e| fail(1, format!("JSON: {e}")))?;
            println!("{text}");
        } else {
            human(value);
        }
        Ok(0)
    }

    fn spinner(&self, message: &str) -> ProgressBar {
        if self.json {
            return ProgressBar::hidden();
        }
        // Drawn only when stderr is a terminal.
        let progress = ProgressBar::new_spinner().with_message(message.to_string());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
            progress.set_style(style);
        }
        progress.enable_steady_tick(Duration::from_millis(100));
        progress
    }
}

/// Columns padded to their widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

fn ago(ms: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let secs = now.saturating_sub(ms) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

fn short(hash: &str) -> String {
    hash.chars().take(12).collect()
}

fn show_status(s: &Status) {
    println!("arbor {} ({})", s.version, s.mode);
    println!("data dir     {}", opt(s.data_dir.as_ref()));
    if let Some(reason) = &s.stopped {
        println!("STOPPED      {reason}");
    }
    let agents: Vec<String> = s.agents.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!(
        "agents       {}",
        if agents.is_empty() {
            "none".into()
        } else {
            agents.join(", ")
        }
    );
    println!(
        "wal          LSN {}..{} ({} durable), {} segments",
        s.wal.first_lsn, s.wal.last_lsn, s.wal.durable_lsn, s.wal.segments
    );
    println!(
        "vault        {} modules, {} bytes on disk",
        s.modules, s.vault_bytes
    );
    for (agent, stage) in &s.evaluations {
        println!("evaluating   {agent}: {stage}");
    }
}

fn show_agents(rows: &[AgentRow]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.supervisor.clone(),
                a.state.clone(),
                a.module.clone(),
                opt(a.seq),
                opt(a.restarts),
                opt(a.queued),
                a.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "agent",
            "supervisor",
            "state",
            "module",
            "seq",
            "restarts",
            "queued",
            "reason",
        ],
        &rows,
    );
}

fn show_checkpoints(rows: &[CheckpointRow]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|c| {
            vec![
                c.agent.clone(),
                c.lsn.to_string(),
                c.seq.to_string(),
                short(&c.module),
                c.bytes.to_string(),
                c.compressed_bytes.to_string(),
                ago(c.created_at_ms),
            ]
        })
        .collect();
    table(
        &[
            "agent", "lsn", "seq", "module", "bytes", "stored", "created",
        ],
        &rows,
    );
}

fn show_verify(report: &WalVerify) {
    let rows: Vec<Vec<String>> = report
        .segments
        .iter()
        .map(|s| {
            vec![
                s.file.clone(),
                s.first_lsn.to_string(),
                s.records.to_string(),
                s.bytes.to_string(),
            ]
        })
        .collect();
    table(&["segment", "first lsn", "records", "bytes"], &rows);
    println!(
        "\n{} records, LSN {}..{}: {}",
        report.records,
        opt(report.first_lsn),
        opt(report.last_lsn),
        if report.clean { "clean" } else { "DAMAGED" }
    );
    for problem in &report.problems {
        println!("  problem: {problem}");
    }
}

fn show_records(rows: &[WalRecord]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.lsn.to_string(),
                r.agent.clone(),
                r.entry.clone(),
                opt(r.seq),
                r.detail.clone(),
            ]
        })
        .collect();
    table(&["lsn", "agent", "entry", "seq", "detail"], &rows);
}

fn show_modules(rows: &[ModuleRow]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|m| {
            vec![
                m.hash.clone(),
                m.name.clone(),
                m.bytes.to_string(),
                ago(m.added_at_ms),
                m.origin.clone(),
            ]
        })
        .collect();
    table(&["hash", "name", "bytes", "added", "origin"], &rows);
}

fn evaluation_line(s: &Evaluation) -> String {
    format!(
        "{}: {:?}; {} samples, {} mismatches, {} gaps",
        s.agent,
        s.stage,
        s.shadow.samples,
        s.shadow.mismatch_count(),
        s.shadow.gaps
    )
}

fn show_evaluation(s: &Evaluation) {
    println!("agent        {}", s.agent);
    println!("candidate    {}", s.candidate);
    println!("current      {}", s.current);
    println!("stage        {:?}", s.stage);
    if let Some(gate) = &s.gate {
        println!(
            "gate         {} records read, {} inputs compared, {} mismatches{}",
            gate.records_read,
            gate.tally.samples,
            gate.tally.mismatch_count(),
            gate.stopped_early
                .as_ref()
                .map_or_else(String::new, |why| format!(" (stopped early: {why})"))
        );
    }
    println!(
        "shadow       {} samples, {} mismatches, {} A/A mismatches, {} gaps",
        s.shadow.samples,
        s.shadow.mismatch_count(),
        s.shadow.aa_mismatches,
        s.shadow.gaps
    );
    for divergence in s.shadow.divergences.iter().take(5) {
        println!(
            "  diverged at input {} ({}: {}): expected {}, got {}",
            divergence.seq, divergence.kind, divergence.what, divergence.expected, divergence.got
        );
    }
    for (kind, graded) in &s.shadow.grades {
        println!(
            "  `{kind}` replies differed: {} better, {} same, {} worse, {} wrong",
            graded.better, graded.same, graded.worse, graded.wrong
        );
        for example in &graded.examples {
            println!(
                "    {} at input {}: {} → expected {}, got {}",
                example.what, example.seq, example.input, example.expected, example.got
            );
        }
    }
    if let Some(decision) = &s.decision {
        println!("verdict      {:?}", decision.verdict);
        for reason in &decision.reasons {
            println!("  {reason}");
        }
        for objective in &decision.objectives {
            println!("  {objective}");
        }
    }
    if let Some(p) = &s.promotion {
        println!(
            "promotion    paused {:.3} ms",
            p.pause.as_secs_f64() * 1000.0
        );
    }
    if let Some(r) = &s.rollback {
        println!(
            "rollback     {} ({} inputs replayed, paused {:.3} ms)",
            r.reason,
            r.replayed,
            r.pause.as_secs_f64() * 1000.0
        );
    }
}

/// Milliseconds for people: `850ms`, `4.2s`, `3m`.
fn millis(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m", ms / 60_000),
        _ => format!("{}h", ms / 3_600_000),
    }
}

fn yes(flag: bool) -> String {
    if flag { "yes" } else { "no" }.into()
}

fn show_cluster(c: &Cluster) {
    let live = c.nodes.iter().filter(|n| n.live).count();
    let owned = c.agents.iter().filter(|a| a.owner.is_some()).count();
    println!(
        "seen from {}: {} nodes ({live} live), {} agents ({owned} owned)\n",
        c.node,
        c.nodes.len(),
        c.agents.len()
    );
    let nodes: Vec<Vec<String>> = c
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                yes(n.live),
                yes(n.draining),
                format!("{} ago", millis(n.heartbeat_age_ms)),
                n.agents.to_string(),
            ]
        })
        .collect();
    table(&["node", "live", "draining", "heartbeat", "agents"], &nodes);
    println!();
    let agents: Vec<Vec<String>> = c
        .agents
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.state.clone(),
                opt(a.owner.as_ref()),
                a.epoch.to_string(),
                // An ended lease (released, expired, or never claimed) has no time left.
                if a.owner.is_some() {
                    millis(a.lease_left_ms)
                } else {
                    "-".into()
                },
                opt(a.placed.as_ref()),
            ]
        })
        .collect();
    table(
        &["agent", "state", "owner", "epoch", "lease left", "placed"],
        &agents,
    );
}

/// The archive as a tree: each candidate under its first parent, siblings oldest first; a
/// candidate whose parent is not in the archive starts a tree of its own.
fn show_tree(rows: &[ArchiveRow]) {
    if rows.is_empty() {
        println!("no candidates yet");
        return;
    }
    let known: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.module.as_str()).collect();
    let mut children: std::collections::BTreeMap<&str, Vec<&ArchiveRow>> = Default::default();
    let mut roots = Vec::new();
    for row in rows {
        match row.parents.first() {
            Some(parent) if known.contains(parent.as_str()) && *parent != row.module => {
                children.entry(parent.as_str()).or_default().push(row)
            }
            _ => roots.push(row),
        }
    }
    for list in children.values_mut() {
        list.sort_by_key(|r| r.at_ms);
    }
    roots.sort_by_key(|r| r.at_ms);
    let mut stack: Vec<(&ArchiveRow, usize)> = roots.into_iter().rev().map(|r| (r, 0)).collect();
    while let Some((row, depth)) = stack.pop() {
        let scores: Vec<String> = row
            .scores
            .iter()
            .filter(|(name, _)| !name.ends_with(".control"))
            .map(|(name, value)| format!("{name}={value:.1}"))
            .collect();
        let reason = row
            .reason
            .as_deref()
            .map(|r| format!(" — {}", r.lines().next().unwrap_or_default()))
            .unwrap_or_default();
        println!(
            "{}{} {} [{}] {}{}{}",
            "  ".repeat(depth),
            short(&row.module),
            row.reached,
            row.origin,
            row.detail,
            if scores.is_empty() {
                String::new()
            } else {
                format!(" ({})", scores.join(", "))
            },
            reason
        );
        if let Some(list) = children.get(row.module.as_str()) {
            stack.extend(list.iter().rev().map(|child| (*child, depth + 1)));
        }
    }
}

fn show_history(rows: &[LineageRow]) {
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.seq.to_string(),
                ago(r.at_ms),
                r.event.clone(),
                short(&r.module),
                r.summary.clone(),
            ]
        })
        .collect();
    table(&["#", "when", "event", "module", "summary"], &table_rows);
}
