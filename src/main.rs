//! The `tidepool` command: parse arguments, load the config, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tidepool::control::Shutdown;
use tidepool::logging::{LogFile, PgbouncerFormat, Sinks};
use tidepool::{Config, Tidepool};
use tokio::signal::unix::{signal, Signal, SignalKind};

#[derive(Parser, Debug)]
#[command(
    name = "tidepool",
    version = tidepool::VERSION,
    about = "A PostgreSQL connection pooler"
)]
struct Args {
    /// Config file: TOML, or PgBouncer's pgbouncer.ini (a file ending in .ini).
    #[arg(value_name = "CONFIG")]
    config_pos: Option<PathBuf>,
    /// Config file (same as the positional argument).
    #[arg(long = "config", short = 'c', value_name = "CONFIG")]
    config: Option<PathBuf>,
    /// Validate the config and exit: 0 if valid, 1 with every problem listed.
    #[arg(long)]
    check: bool,
    /// More logging (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less logging: errors only.
    #[arg(short, long)]
    quiet: bool,
    /// Online restart: have the instance running with this config stop
    /// listening and finish its transactions, and take over its ports
    /// (docs/admin.md).
    #[arg(short = 'R', long)]
    reboot: bool,
    /// Run in the background (needs pidfile, and logfile or syslog).
    #[arg(short = 'd', long)]
    daemon: bool,
    /// Switch to this OS user at start (as the `user` setting); root only.
    #[arg(short = 'u', long, value_name = "USERNAME")]
    user: Option<String>,
    /// Print manual page tidepool(1) or tidepool(5) in roff and exit (the
    /// package's pages are made this way).
    #[arg(long, value_name = "SECTION", value_parser = ["1", "5"], hide = true)]
    man: Option<String>,
}

/// Manual page `section` on stdout.
fn print_man(section: &str) -> ExitCode {
    use clap::CommandFactory;
    let page = match section {
        "1" => {
            let mut roff = Vec::new();
            let cmd = Args::command().long_about(
                "tidepool is a PostgreSQL connection pooler: a drop-in for PgBouncer \
                 that reads its pgbouncer.ini and userlist.txt, speaks its admin \
                 console and exports its metrics. The config file is TOML, or \
                 pgbouncer.ini; tidepool(5) describes both.",
            );
            if let Err(e) = clap_mangen::Man::new(cmd).section("1").render(&mut roff) {
                eprintln!("tidepool: {e}");
                return ExitCode::from(1);
            }
            let mut page = String::from_utf8_lossy(&roff).into_owned();
            page.push_str(".SH \"SEE ALSO\"\ntidepool(5), pgbouncer(1)\n");
            page
        }
        _ => tidepool::man::config_page(env!("CARGO_PKG_VERSION")),
    };
    print!("{page}");
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(section) = &args.man {
        return print_man(section);
    }
    let Some(path) = args.config.clone().or(args.config_pos.clone()) else {
        eprintln!("tidepool: a config file is required (tidepool CONFIG)");
        return ExitCode::from(2);
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("{e}");
            }
            return ExitCode::from(1);
        }
    };
    if args.check {
        let base = path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
        if let Err(e) = tidepool::tls::load(&config.settings, &base) {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(1);
        }
        for w in &config.warnings {
            eprintln!("warning: {w}");
        }
        let format = tidepool::config::Format::of(&path);
        println!("{}: ok (read as {format})", path.display());
        return ExitCode::SUCCESS;
    }
    if let Err(code) = become_service(&args, &config) {
        return code;
    }
    let (logfile, level) = match init_logs(&args, &config) {
        Ok(l) => l,
        Err(code) => return code,
    };
    // Into the background before any thread starts (fork keeps only
    // this one); stderr goes to /dev/null, the log file stays.
    if args.daemon {
        if let Err(e) = tidepool::process::daemonize() {
            eprintln!("tidepool: {e}");
            return ExitCode::from(1);
        }
    }
    tracing::info!("tidepool {} starting", env!("CARGO_PKG_VERSION"));
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    // Thread per core: each worker thread runs a single-threaded runtime
    // of its own, and the acceptor deals new clients out to them in turn.
    // A client's session, and the servers it uses, then stay on one
    // thread, woken by one event loop; tokio's work-stealing runtime cost a
    // third more CPU per transaction (docs/design-decisions.md). By default half
    // the CPUs: a pooler usually shares its machine, and fewer loops wake
    // less often per transaction.
    let threads = match config.settings.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
        n => n as usize,
    };
    // Event loops with I/O only, and a thread for every timer: a timer
    // driver costs every wake of an event loop (src/threads.rs).
    let threads = match tidepool::threads::Threads::build(threads) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tidepool: cannot start the runtime threads: {e}");
            return ExitCode::from(1);
        }
    };
    let tidepool::threads::Threads {
        main,
        workers,
        timers,
    } = threads;
    if args.reboot {
        if let Err(e) = tidepool::takeover::request(&config.settings) {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
        tracing::info!("running instance asked to hand over (SHUTDOWN WAIT_FOR_SERVERS)");
    }
    main.block_on(run(config, workers, timers, logfile, level, args.reboot))
}

async fn run(
    config: Config,
    workers: Vec<tokio::runtime::Handle>,
    timers: tidepool::threads::Timers,
    logfile: Option<LogFile>,
    level: LogLevel,
    reboot: bool,
) -> ExitCode {
    let pidfile = config.settings.pidfile.clone();
    let app = match start(config, workers, timers, reboot).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    if !pidfile.is_empty() {
        if let Err(e) = std::fs::write(&pidfile, format!("{}\n", std::process::id())) {
            tracing::error!("cannot write pidfile {pidfile}: {e}");
        }
    }
    tokio::spawn(follow_verbose(app.shared().clone(), level));
    // One set of handlers for the whole life: a signal that lands between
    // the running phase and the drain must reach the drain, not a dropped
    // receiver. Installed before READY: systemd (or anyone told we are
    // ready) may send SIGHUP at once, whose default action ends the
    // process.
    let signals = Signals::install();
    let systemd = tidepool::systemd::Notifier::from_env();
    if let Some(n) = &systemd {
        n.ready("accepting connections");
    }
    let Some(mut signals) = signals else {
        // Without signal handlers, run until killed.
        std::future::pending::<()>().await;
        return ExitCode::SUCCESS;
    };
    let how = wait_for_signal(&app, &mut signals, logfile.as_ref(), systemd.as_ref()).await;
    tracing::info!("shutting down ({how:?})");
    if let Some(n) = &systemd {
        n.stopping(&format!("shutting down ({how:?})"));
    }
    drain(&app, &mut signals, how).await;
    app.shutdown().await;
    if !pidfile.is_empty() {
        let _ = std::fs::remove_file(&pidfile);
    }
    ExitCode::SUCCESS
}

/// `-u` / `user`, and the checks `-d` needs, before anything is opened.
fn become_service(args: &Args, config: &Config) -> Result<(), ExitCode> {
    let user = args
        .user
        .clone()
        .unwrap_or_else(|| config.settings.user.clone());
    if !user.is_empty() {
        if let Err(e) = tidepool::process::switch_user(&user) {
            eprintln!("tidepool: {e}");
            return Err(ExitCode::from(1));
        }
    }
    if args.daemon {
        let s = &config.settings;
        if s.pidfile.is_empty() || (s.logfile.is_empty() && !s.syslog) {
            eprintln!("tidepool: in daemon mode, pidfile and logfile or syslog must be set");
            return Err(ExitCode::from(1));
        }
    }
    Ok(())
}

/// The log sinks (logfile, syslog, stderr) and the reloadable level.
fn init_logs(args: &Args, config: &Config) -> Result<(Option<LogFile>, LogLevel), ExitCode> {
    let from_env = std::env::var_os("TIDEPOOL_LOG").is_some();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEPOOL_LOG")
        .unwrap_or_else(|_| level_filter(args.verbose, config.settings.verbose));
    // Reloadable: `verbose` may change at run time (SET verbose, RELOAD).
    let (filter, level) = tracing_subscriber::reload::Layer::new(filter);
    // PgBouncer's line format, to logfile if set and to stderr unless -q
    // (src/logging.rs).
    let logfile = match config.settings.logfile.as_str() {
        "" => None,
        path => match LogFile::open(std::path::Path::new(path)) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("tidepool: cannot open logfile {path}: {e}");
                return Err(ExitCode::from(1));
            }
        },
    };
    let syslog = if config.settings.syslog {
        let s = &config.settings;
        let path = std::path::Path::new(tidepool::syslog::DEFAULT_SOCKET);
        match tidepool::syslog::Syslog::open(path, &s.syslog_ident, &s.syslog_facility) {
            Ok(l) => Some(std::sync::Arc::new(l)),
            Err(e) => {
                eprintln!("tidepool: syslog: {e}");
                None
            }
        }
    } else {
        None
    };
    {
        use tracing_subscriber::prelude::*;
        let lines = tracing_subscriber::fmt::layer()
            // Plain text: logs are read by tools, and colour codes break them.
            .with_ansi(false)
            .event_format(match config.settings.log_format {
                tidepool::config::LogFormat::Json => PgbouncerFormat::json(),
                tidepool::config::LogFormat::Text => PgbouncerFormat::default(),
            })
            .with_writer(Sinks {
                file: logfile.clone(),
                stderr: !args.quiet,
                syslog,
            });
        tracing_subscriber::registry()
            .with(filter)
            .with(lines)
            .init();
    }
    let level = LogLevel {
        handle: level,
        flags: args.verbose,
        from_env,
    };
    Ok((logfile, level))
}

/// Start serving. After `--reboot`, the old instance lets go of the
/// ports within moments of its answer: a port still taken is tried again
/// for up to 10 s.
async fn start(
    config: Config,
    workers: Vec<tokio::runtime::Handle>,
    timers: tidepool::threads::Timers,
    reboot: bool,
) -> std::io::Result<Tidepool> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = Tidepool::start_with_workers(config.clone(), workers.clone(), timers.clone()).await;
        match r {
            Err(e)
                if reboot
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                timers.sleep(std::time::Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// Run until SIGTERM, SIGINT, SIGQUIT or the console's SHUTDOWN; SIGHUP
/// reloads the config (as RELOAD does), keeping the old one if the new one
/// is invalid; SIGUSR1 / SIGUSR2 pause and resume.
async fn wait_for_signal(
    app: &Tidepool,
    signals: &mut Signals,
    logfile: Option<&LogFile>,
    systemd: Option<&tidepool::systemd::Notifier>,
) -> Shutdown {
    let Signals {
        term,
        int,
        quit,
        hup,
        usr1,
        usr2,
    } = signals;
    let shared = app.shared();
    let control = &shared.control;
    let mut shutdown = control.shutdown_requested();
    loop {
        tokio::select! {
            // SIGUSR1 = PAUSE (everything), SIGUSR2 = RESUME; the log
            // lines are PgBouncer's.
            _ = usr1.recv() => sigusr1(control),
            _ = usr2.recv() => {
                if control.shutting_down().is_some() {
                    tracing::info!("got SIGUSR2 while shutting down, ignoring");
                } else {
                    sigusr2(control);
                }
            }
            _ = shutdown.changed() => {
                if let Some(how) = *shutdown.borrow() {
                    return how;
                }
            }
            _ = hup.recv() => sighup(app, logfile, systemd),
            _ = term.recv() => {
                tracing::info!("got SIGTERM, shutting down, waiting for all clients disconnect");
                return shared.begin_shutdown(Shutdown::WaitForClients, true);
            }
            _ = int.recv() => {
                tracing::info!("got SIGINT, shutting down, waiting for all servers connections to be released");
                return shared.begin_shutdown(Shutdown::WaitForServers, true);
            }
            _ = quit.recv() => {
                tracing::info!("got SIGQUIT, fast exit");
                return shared.begin_shutdown(Shutdown::Now, true);
            }
        }
    }
}

/// The log filter for `-v` flags plus the `verbose` setting: PgBouncer's
/// levels, 0 = LOG (info), 1 = DEBUG, 2 and up = NOISE (trace).
fn level_filter(flags: u8, setting: u32) -> tracing_subscriber::EnvFilter {
    // tidepool's own lines only: the libraries' debug output is not
    // PgBouncer's and would drown them.
    let level = match u32::from(flags) + setting {
        0 => "info",
        1 => "info,tidepool=debug",
        _ => "info,tidepool=trace",
    };
    tracing_subscriber::EnvFilter::new(level)
}

type FilterHandle =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// What changes the log level at run time.
struct LogLevel {
    handle: FilterHandle,
    /// `-v` on the command line.
    flags: u8,
    /// TIDEPOOL_LOG set: it decides, not `verbose`.
    from_env: bool,
}

/// Follow `verbose` as the config changes (SET verbose, RELOAD).
async fn follow_verbose(shared: std::sync::Arc<tidepool::Shared>, level: LogLevel) {
    if level.from_env {
        return;
    }
    let mut swaps = shared.config_swaps();
    let mut current = shared.config().settings.verbose;
    while swaps.changed().await.is_ok() {
        let verbose = shared.config().settings.verbose;
        if verbose != current {
            current = verbose;
            let _ = level.handle.reload(level_filter(level.flags, verbose));
        }
    }
}

/// The signals tidepool answers, registered once at start.
struct Signals {
    term: Signal,
    int: Signal,
    quit: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl Signals {
    fn install() -> Option<Self> {
        let on = |kind| signal(kind).ok();
        Some(Self {
            term: on(SignalKind::terminate())?,
            int: on(SignalKind::interrupt())?,
            quit: on(SignalKind::quit())?,
            hup: on(SignalKind::hangup())?,
            usr1: on(SignalKind::user_defined1())?,
            usr2: on(SignalKind::user_defined2())?,
        })
    }
}

/// SIGUSR1: PAUSE everything.
fn sigusr1(control: &tidepool::control::Control) {
    if control.all_paused() || control.is_suspended() {
        tracing::info!("got SIGUSR1, but already paused/suspended");
    } else {
        tracing::info!("got SIGUSR1, pausing all activity");
        control.pause(None);
    }
}

/// SIGUSR2: RESUME from PAUSE or SUSPEND.
fn sigusr2(control: &tidepool::control::Control) {
    if control.is_suspended() {
        tracing::info!("got SIGUSR2, continuing from SUSPEND");
    } else if control.all_paused() {
        tracing::info!("got SIGUSR2, continuing from PAUSE");
    } else {
        tracing::info!("got SIGUSR2, but not paused/suspended");
        return;
    }
    control.resume(None);
}

/// SIGHUP: reopen the log file and reload the config, as RELOAD does;
/// systemd hears RELOADING, then READY (also when the new config was
/// refused: the old one still serves).
fn sighup(
    app: &Tidepool,
    logfile: Option<&LogFile>,
    systemd: Option<&tidepool::systemd::Notifier>,
) {
    tracing::info!("got SIGHUP, re-reading config");
    if let Some(n) = systemd {
        n.reloading();
    }
    if let Some(f) = logfile {
        f.reopen();
    }
    let status = match tidepool::admin::reload(app.shared()) {
        Ok(()) => "accepting connections".to_string(),
        Err(e) => {
            tracing::error!("SIGHUP: {e}");
            format!("accepting connections; the last reload was refused: {e}")
        }
    };
    if let Some(n) = systemd {
        n.ready(&status);
    }
}

/// Stop taking clients, then wait as asked: for clients to leave, or for
/// servers to be released. A second SIGTERM or SIGINT, SIGQUIT, or the
/// console's SHUTDOWN ends the wait.
async fn drain(app: &Tidepool, signals: &mut Signals, how: Shutdown) {
    if how == Shutdown::Now {
        return;
    }
    app.stop_accepting();
    let shared = app.shared();
    let Signals {
        term,
        int,
        quit,
        usr2,
        ..
    } = signals;
    let mut shutdown = shared.control.shutdown_requested();
    let mut tick = shared.timers.interval(std::time::Duration::from_millis(50));
    loop {
        let done = match shared.control.shutting_down().unwrap_or(how) {
            Shutdown::Now => true,
            Shutdown::WaitForClients => shared.client_count() == 0,
            Shutdown::WaitForServers => shared.pools.all().iter().all(|p| {
                let r = p.report();
                r.servers == r.idle
            }),
        };
        if done {
            return;
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {}
            _ = term.recv() => {
                tracing::info!("got SIGTERM while shutting down, fast exit");
                return;
            }
            _ = int.recv() => {
                tracing::info!("got SIGINT while shutting down, fast exit");
                return;
            }
            _ = quit.recv() => {
                tracing::info!("got SIGQUIT, fast exit");
                return;
            }
            // RESUME would let new transactions in while draining.
            _ = usr2.recv() => tracing::info!("got SIGUSR2 while shutting down, ignoring"),
        }
    }
}
