//! The deployment files (`Dockerfile`, `deploy/`) against the real binary: every
//! `CHORUS_*` variable and `serve` flag they use is one `chorus serve` has (read from
//! its `--help`), the compose example's three nodes share one PostgreSQL and one Redis
//! that are services of the file, the balancer sends to exactly those nodes, the TOML
//! file is accepted by a real server, the image runs as non-root. These run
//! everywhere; `docker compose config` is an ignored test here that `scripts/test` runs
//! where Docker Compose is installed, and `scripts/test` runs `systemd-analyze verify`
//! where that is (each prints SKIPPED in its summary otherwise).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

mod common;
use common::{free_addr, serve};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// What `chorus serve` accepts, from its `--help`: environment variables and flags.
struct Serve {
    env: BTreeSet<String>,
    flags: BTreeSet<String>,
}

fn serve_help() -> Serve {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let env: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .map(|rest| rest.split(['=', ']']).next().unwrap_or_default().to_owned())
        .collect();
    let flags: BTreeSet<String> = help
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches(',').to_owned())
        .collect();
    assert!(env.contains("CHORUS_DATABASE_URL"), "{help}");
    assert!(flags.contains("--listen"), "{help}");
    Serve { env, flags }
}

fn string(y: &Yaml) -> String {
    match y {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// A service's `environment` (map or `KEY=value` list) as a map.
fn environment(service: &Yaml) -> BTreeMap<String, String> {
    match &service["environment"] {
        Yaml::Hash(map) => map.iter().map(|(k, v)| (string(k), string(v))).collect(),
        Yaml::Array(list) => list
            .iter()
            .map(|item| {
                let item = string(item);
                let (k, v) = item.split_once('=').unwrap_or((&item, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        Yaml::BadValue => BTreeMap::new(),
        other => panic!("environment: {other:?}"),
    }
}

/// The host of a `scheme://user:password@host:port/path` URL (`${…}` left as is).
fn host(url: &str) -> &str {
    let rest = url.split_once("://").unwrap().1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split([':', '/']).next().unwrap()
}

fn port(listen: &str) -> &str {
    listen.rsplit_once(':').unwrap().1
}

/// The compose file as data (parsed here, without Docker): what it declares, not that
/// Docker accepts it — `docker_compose_accepts_the_compose_file` below does that.
#[test]
fn the_compose_file_declares_three_nodes_on_one_postgres_and_one_redis() {
    let serve = serve_help();
    let docs = YamlLoader::load_from_str(&read("deploy/compose.yaml")).unwrap();
    let compose = &docs[0];
    let services = compose["services"].as_hash().unwrap();
    let names: BTreeSet<String> = services.keys().map(string).collect();
    let nodes: Vec<String> = names
        .iter()
        .filter(|n| n.starts_with("chorus-"))
        .cloned()
        .collect();
    assert_eq!(nodes, ["chorus-1", "chorus-2", "chorus-3"]);

    let mut shared = None;
    for node in &nodes {
        let service = &compose["services"][node.as_str()];
        assert_eq!(string(&service["image"]), "chorus:local", "{node}");
        let env = environment(service);
        for key in env.keys() {
            assert!(
                serve.env.contains(key),
                "{node}: {key} is not a chorus serve variable"
            );
        }
        // PostgreSQL and Redis: services of this file, the same for every node.
        let database = &env["CHORUS_DATABASE_URL"];
        assert!(database.starts_with("postgres://"), "{database}");
        assert!(
            names.contains(host(database)),
            "{node}: no service {}",
            host(database)
        );
        let redis = &env["CHORUS_REDIS_URL"];
        assert!(redis.starts_with("redis://"), "{redis}");
        assert!(
            names.contains(host(redis)),
            "{node}: no service {}",
            host(redis)
        );
        assert!(env.contains_key("CHORUS_ADMIN_TOKEN"), "{node}");
        let this = (
            database.clone(),
            redis.clone(),
            env["CHORUS_LISTEN"].clone(),
        );
        assert_eq!(shared.get_or_insert_with(|| this.clone()), &this, "{node}");
        // The health check asks the port the node listens on.
        let check = format!("{:?}", service["healthcheck"]["test"]);
        let listen_port = port(&env["CHORUS_LISTEN"]);
        assert!(
            check.contains(&format!("/dev/tcp/127.0.0.1/{listen_port}")),
            "{check}"
        );
        assert!(check.contains("/readyz"), "{check}");
        // The TOML file mounted where CHORUS_CONFIG points.
        let config = &env["CHORUS_CONFIG"];
        let mounts = format!("{:?}", service["volumes"]);
        assert!(
            mounts.contains(&format!("./chorus.toml:{config}:ro")),
            "{mounts}"
        );
    }
    assert!(compose["services"]["chorus-1"]["build"]["context"].as_str() == Some(".."));

    // PostgreSQL's database and user are the ones in the URL.
    let (database, _, listen) = shared.unwrap();
    let pg = environment(&compose["services"][host(&database)]);
    let path_db = database.rsplit('/').next().unwrap();
    assert_eq!(pg["POSTGRES_DB"], path_db);
    let user = database
        .split("://")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    assert_eq!(pg["POSTGRES_USER"], user);

    // The balancer sends to exactly the nodes, on their port, and trusts one hop.
    let caddy = read("deploy/Caddyfile");
    let upstreams: Vec<&str> = caddy
        .lines()
        .find_map(|l| l.trim().strip_prefix("reverse_proxy "))
        .unwrap()
        .trim_end_matches('{')
        .split_whitespace()
        .collect();
    let expected: Vec<String> = nodes
        .iter()
        .map(|n| format!("{n}:{}", port(&listen)))
        .collect();
    assert_eq!(upstreams, expected);
    assert!(caddy.contains("health_uri /readyz"), "{caddy}");
    let balancer = format!("{:?}", compose["services"]["balancer"]["volumes"]);
    assert!(
        balancer.contains("./Caddyfile:/etc/caddy/Caddyfile"),
        "{balancer}"
    );
    assert!(read("deploy/chorus.toml").contains("trusted_proxy_hops = 1"));
}

/// `docker compose config` accepts the file. Ignored by default, so that a machine
/// without Docker Compose reports it skipped, never passed; `scripts/test` runs it where
/// `docker compose` is installed and prints a SKIPPED line where it is not.
#[test]
#[ignore = "needs docker compose: scripts/test runs it where installed"]
fn docker_compose_accepts_the_compose_file() {
    let out = std::process::Command::new("docker")
        .args(["compose", "-f", "deploy/compose.yaml", "config", "--quiet"])
        .current_dir(repo())
        .env("CHORUS_ADMIN_TOKEN", "syntax-check")
        .output()
        .unwrap_or_else(|e| panic!("docker: {e}"));
    assert!(
        out.status.success(),
        "docker compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_example_toml_file_is_accepted_by_a_real_server() {
    // Unknown keys stop the start (deny_unknown_fields): a ready server took the file.
    let data = tempfile::tempdir().unwrap();
    let config = repo().join("deploy/chorus.toml");
    let config = config.to_str().unwrap();
    let mut server = serve(
        free_addr(),
        data.path(),
        "deploy-admin",
        &[("CHORUS_CONFIG", config)],
    )
    .await;
    server.kill().await.unwrap();
}

#[test]
fn the_systemd_unit_runs_chorus_serve_unprivileged_with_real_settings() {
    let serve = serve_help();
    let unit = read("deploy/chorus.service");
    let mut section = "";
    let mut service: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            section = name.trim_end_matches(']');
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("{line}"));
        if section == "Service" {
            service.entry(key).or_default().push(value);
        }
    }
    let exec: Vec<&str> = service["ExecStart"][0].split_whitespace().collect();
    assert_eq!(exec[..2], ["/usr/local/bin/chorus", "serve"]);
    for flag in &exec[2..] {
        let name = flag.split('=').next().unwrap();
        assert!(
            serve.flags.contains(name),
            "{name} is not a chorus serve flag"
        );
    }
    let mut env = BTreeMap::new();
    for assignment in &service["Environment"] {
        let (key, value) = assignment.split_once('=').unwrap();
        assert!(
            serve.env.contains(key),
            "{key} is not a chorus serve variable"
        );
        env.insert(key, value);
    }
    // Unprivileged, and the data dir is the state directory systemd creates for it.
    assert_eq!(service["DynamicUser"], ["yes"]);
    assert!(!service.contains_key("User"), "DynamicUser makes the user");
    assert_eq!(
        env["CHORUS_DATA_DIR"],
        format!("/var/lib/{}", service["StateDirectory"][0])
    );
    assert_eq!(service["StateDirectoryMode"], ["0700"]);
    assert_eq!(service["KillSignal"], ["SIGTERM"]);
    assert!(unit.contains("WantedBy=multi-user.target"));
}

#[test]
fn the_image_is_multi_stage_and_runs_only_the_binary_as_non_root() {
    let serve = serve_help();
    let dockerfile = read("Dockerfile");
    // Instructions, with continuation lines joined.
    let joined = dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let instructions: Vec<(&str, &str)> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.split_once(' ').unwrap_or((l, "")))
        .collect();
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (op, _))| *op == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let build_stage = instructions[stages[0]].1;
    let (_, build_name) = build_stage.split_once(" AS ").unwrap();
    assert!(
        instructions[stages[0]..stages[1]]
            .iter()
            .any(|(op, args)| *op == "RUN"
                && args.contains("cargo build --release --locked -p chorus")),
        "{joined}"
    );
    let runtime = &instructions[stages[1]..];
    // Only what was built is copied in: nothing from the build context.
    for (op, args) in runtime {
        if *op == "COPY" || *op == "ADD" {
            assert!(
                args.contains(&format!("--from={build_name}")),
                "{op} {args}"
            );
        }
    }
    assert!(
        runtime
            .iter()
            .any(|(op, args)| *op == "COPY" && args.ends_with("/usr/local/bin/chorus"))
    );
    let user: Vec<&str> = runtime
        .iter()
        .filter(|(op, _)| *op == "USER")
        .map(|(_, args)| *args)
        .collect();
    assert_eq!(user.len(), 1, "{user:?}");
    let uid = user[0].split(':').next().unwrap();
    assert!(uid != "root" && uid != "0", "runs as {uid}");
    // ENV names and the listen port.
    let mut env = BTreeMap::new();
    for (_, args) in runtime.iter().filter(|(op, _)| *op == "ENV") {
        for pair in args.split_whitespace() {
            let (key, value) = pair.split_once('=').unwrap();
            assert!(
                serve.env.contains(key),
                "{key} is not a chorus serve variable"
            );
            env.insert(key, value);
        }
    }
    let expose: Vec<&str> = runtime
        .iter()
        .filter(|(op, _)| *op == "EXPOSE")
        .map(|(_, args)| *args)
        .collect();
    assert_eq!(expose, [port(env["CHORUS_LISTEN"])]);
    assert!(runtime.contains(&("ENTRYPOINT", "[\"chorus\"]")));
    assert!(runtime.contains(&("CMD", "[\"serve\"]")));
    // The data dir is a volume owned by that user.
    assert!(
        runtime
            .iter()
            .any(|(op, args)| *op == "VOLUME" && *args == env["CHORUS_DATA_DIR"])
    );

    // The context leaves out builds and dependencies but keeps the embedded web UI.
    let ignore = read(".dockerignore");
    let ignored: Vec<&str> = ignore
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    for must in [".git", "target", "**/node_modules"] {
        assert!(ignored.contains(&must), "{must} not in .dockerignore");
    }
    assert!(
        !ignored
            .iter()
            .any(|l| l.starts_with("web") && !l.contains("e2e"))
    );
}
