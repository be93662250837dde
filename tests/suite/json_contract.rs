//! Every `--json` document validates against `docs/json.md`: each of its
//! tables is parsed (key, type), and every object printed in many real
//! situations (free, held, refused, claimed, released, failed, waited,
//! first-free, a tree with findings and fixes, usage errors, the fleet
//! store) must have exactly the documented keys, each of a documented type.

use crate::common::*;
use serde_json::Value;
use std::collections::BTreeMap;

/// One documented object: its keys, in order, each with its allowed types.
type Table = Vec<(String, Vec<String>)>;

/// The tables of `docs/json.md`, by heading.
fn contract() -> BTreeMap<String, Table> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/json.md"))
        .expect("docs/json.md");
    let mut tables = BTreeMap::new();
    let mut heading = String::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            heading = h.trim().to_string();
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `key` | type | meaning |
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let key = cells[1].trim_matches('`').to_string();
        let types = cells[2]
            .split(" or ")
            .map(|t| t.trim().to_string())
            .collect();
        tables
            .entry(heading.clone())
            .or_insert_with(Vec::new)
            .push((key, types));
    }
    tables
}

/// Checks `v` against the table `name`; returns what is wrong, with where.
fn check(tables: &BTreeMap<String, Table>, name: &str, v: &Value, at: &str, bad: &mut Vec<String>) {
    let Some(table) = tables.get(name) else {
        bad.push(format!("{at}: no table `{name}` in docs/json.md"));
        return;
    };
    let Some(obj) = v.as_object() else {
        bad.push(format!("{at}: `{name}` should be an object: {v}"));
        return;
    };
    for key in obj.keys() {
        if !table.iter().any(|(k, _)| k == key) {
            bad.push(format!("{at}: key `{key}` is not documented in `{name}`"));
        }
    }
    for (key, types) in table {
        let Some(value) = obj.get(key) else {
            bad.push(format!(
                "{at}: documented key `{key}` of `{name}` is missing"
            ));
            continue;
        };
        let at = format!("{at}.{key}");
        if !types
            .iter()
            .any(|t| fits(tables, t, value, &at, &mut Vec::new()))
        {
            // Report the errors of the best-matching alternative.
            let mut why = Vec::new();
            for t in types {
                fits(tables, t, value, &at, &mut why);
            }
            bad.push(format!("{at}: {value} is not {}", types.join(" or ")));
            bad.extend(why);
        }
    }
}

/// Whether `v` is of documented type `t` (recursing into tables).
fn fits(
    tables: &BTreeMap<String, Table>,
    t: &str,
    v: &Value,
    at: &str,
    bad: &mut Vec<String>,
) -> bool {
    match t {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => {
            if let Some(elem) = t.strip_prefix("array of ") {
                let Some(items) = v.as_array() else {
                    return false;
                };
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    let mut why = Vec::new();
                    if !fits(tables, elem, item, &format!("{at}[{i}]"), &mut why) {
                        ok = false;
                        bad.extend(why);
                        bad.push(format!("{at}[{i}]: {item} is not {elem}"));
                    }
                }
                ok
            } else if v.is_object() {
                let before = bad.len();
                check(tables, t, v, at, bad);
                bad.len() == before
            } else {
                false
            }
        }
    }
}

/// Validates one printed document as `table`; also checks `"schema": 1`.
fn validate(tables: &BTreeMap<String, Table>, table: &str, what: &str, stdout: &[u8]) -> Value {
    let v = json(stdout);
    let mut bad = Vec::new();
    check(tables, table, &v, what, &mut bad);
    assert!(bad.is_empty(), "{what}:\n{}\n{v:#}", bad.join("\n"));
    assert_eq!(v["schema"], 1, "{what}");
    v
}

/// Every table the documents reach is documented, and each key's types are
/// ones the checker knows (a typo in the doc fails here, not silently).
#[test]
fn the_contract_is_well_formed() {
    let tables = contract();
    for name in [
        "Workers document",
        "Worker entry",
        "Error",
        "Tree document",
        "Scanned",
        "Tmux",
        "Server",
        "Finding",
        "Fixed",
        "Error document",
    ] {
        assert!(
            tables.contains_key(name),
            "docs/json.md has no table {name}"
        );
    }
    let simple = ["string", "integer", "number", "boolean", "null"];
    for (name, table) in &tables {
        for (key, types) in table {
            for t in types {
                let base = t.strip_prefix("array of ").unwrap_or(t);
                assert!(
                    simple.contains(&base) || tables.contains_key(base),
                    "{name}.{key}: unknown type `{t}`"
                );
            }
        }
    }
}

#[test]
fn worker_documents_on_lock_files_follow_the_contract() {
    let tables = contract();
    let sb = Sandbox::new();
    let free = sb.worker("free");
    let held = sb.worker("held");
    let missing = sb.path().join("missing");
    let holder = sleeper();
    let pid = holder.pid().to_string();
    let doc = |what: &str, args: &[&str]| {
        let out = sb.cmd().args(args).output().unwrap();
        validate(&tables, "Workers document", what, &out.stdout)
    };
    let w = |p: &std::path::Path| p.to_str().unwrap().to_string();

    let v = doc("claim", &["claim", "--json", "--pid", &pid, &w(&held)]);
    let e = &v["workers"][0];
    assert_eq!(
        (e["action"].as_str(), e["standing"].as_str()),
        (Some("claimed"), Some("yours"))
    );
    assert_eq!(e["command"], "sleep", "the holder's command: {e}");

    let v = doc(
        "status",
        &["status", "--json", &w(&free), &w(&held), &w(&missing)],
    );
    let states: Vec<_> = v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].clone())
        .collect();
    assert_eq!(
        states,
        [Value::from("free"), Value::from("held"), Value::Null]
    );
    assert_eq!(v["workers"][2]["error"]["kind"], "no-such-worker");
    assert_eq!(
        v["workers"][1]["standing"], "taken",
        "status asks as the invoking process"
    );

    let v = doc(
        "check as holder",
        &["check", "--json", "--pid", &pid, &w(&held)],
    );
    assert_eq!(v["workers"][0]["standing"], "yours");
    let v = doc(
        "check as another",
        &["check", "--json", "--pid", "1", &w(&held), &w(&free)],
    );
    assert_eq!(v["workers"][0]["standing"], "taken");
    assert_eq!(v["workers"][1]["standing"], "claimable");

    let v = doc("refused claim", &["claim", "--json", &w(&held)]);
    assert_eq!(v["workers"][0]["action"], "refused");
    // A wait that timed out is the refusal, with how long it waited.
    let v = doc(
        "waited claim",
        &["claim", "--json", "--wait=10ms", &w(&held)],
    );
    assert!(v["waited"].is_number(), "{v}");
    assert_eq!(v["workers"][0]["action"], "refused", "{v}");

    let v = doc(
        "first-free",
        &[
            "claim",
            "--json",
            "--first-free",
            "--pid",
            &pid,
            &w(&held),
            &w(&free),
        ],
    );
    let actions: Vec<_> = v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].clone())
        .collect();
    assert_eq!(actions, [Value::from("refused"), Value::from("claimed")]);

    doc(
        "refused release",
        &["release", "--json", "--pid", "1", &w(&held)],
    );
    let v = doc("release", &["release", "--json", "--pid", &pid, &w(&held)]);
    assert_eq!(v["workers"][0]["action"], "released");
    let v = doc("failed claim", &["claim", "--json", &w(&missing)]);
    assert_eq!(v["workers"], Value::Array(vec![]));
    assert_eq!(v["error"]["kind"], "no-such-worker");
    assert!(v["error"]["path"].is_string(), "{v}");
}

#[test]
fn tree_and_error_documents_follow_the_contract() {
    let tables = contract();
    let sb = Sandbox::new();
    let holder = sleeper();
    let held = sb.worker("rig/held");
    sb.claim(&held, holder.pid(), &[]).success();
    write_lock(&sb.worker("rig/stale"), &go_lock(dead_pid(), None));
    write_lock(&sb.worker("rig/corrupt"), "{ not json");
    let root = sb.path().to_str().unwrap();

    let out = sb.cmd().args(["list", "--json", root]).output().unwrap();
    let v = validate(&tables, "Tree document", "list", &out.stdout);
    assert_eq!(v["scanned"]["locks"], 3);
    let out = sb.cmd().args(["doctor", "--json", root]).output().unwrap();
    let v = validate(&tables, "Tree document", "doctor", &out.stdout);
    assert_eq!(v["findings"].as_array().unwrap().len(), 2, "{v:#}");
    let out = sb
        .cmd()
        .args(["doctor", "--fix", "--json", root])
        .output()
        .unwrap();
    let v = validate(&tables, "Tree document", "doctor --fix", &out.stdout);
    assert_eq!(v["fixed"].as_array().unwrap().len(), 2, "{v:#}");

    let gone = sb.path().join("gone");
    let out = sb
        .cmd()
        .args(["doctor", "--json"])
        .arg(&gone)
        .output()
        .unwrap();
    let v = validate(
        &tables,
        "Error document",
        "doctor of a missing root",
        &out.stdout,
    );
    assert!(v["root"].is_string());

    // A usage error keeps clap's whole message, not its first line only.
    let out = sb
        .cmd()
        .args(["claim", "--json", "--wait=soon", root])
        .output()
        .unwrap();
    let v = validate(&tables, "Error document", "usage error", &out.stdout);
    assert_eq!(v["error"]["kind"], "usage");
    assert!(v["root"].is_null());
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("--wait") && message.contains("soon"),
        "{message}"
    );
}

#[cfg(feature = "etcd")]
#[test]
fn the_fleet_store_prints_the_same_keys() {
    use crate::fleet::Host;
    let tables = contract();
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let host = Host::new(&sb, "host-a", &etcd.store("contract"));
    let holder = sleeper();
    let w = host.worker("rig/max");
    let out = host.claim("rig/max", holder.pid());
    let v = validate(&tables, "Workers document", "fleet claim", &out.stdout);
    let e = &v["workers"][0];
    assert!(e["fence"].is_i64() && e["store"].is_string(), "{e}");
    assert!(
        e["store_key"]
            .as_str()
            .is_some_and(|k| k.contains("rig/max")),
        "{e}"
    );
    assert_eq!(
        e["lock_path"],
        lock_path(&w).to_str().unwrap(),
        "lock_path is the file, not the key"
    );

    let out = host.run(&["status", "--json", w.to_str().unwrap()]);
    validate(&tables, "Workers document", "fleet status", &out.stdout);
    let out = host.run(&["list", "--json"]);
    let v = validate(&tables, "Tree document", "fleet list", &out.stdout);
    assert!(
        v["scanned"]["dirs"].is_null() && v["store"].is_string(),
        "{v:#}"
    );
    let out = host.run(&["doctor", "--json"]);
    validate(&tables, "Tree document", "fleet doctor", &out.stdout);
    let out = host.run(&[
        "release",
        "--json",
        "--pid",
        &holder.pid().to_string(),
        w.to_str().unwrap(),
    ]);
    validate(&tables, "Workers document", "fleet release", &out.stdout);
}

/// `release --all --json` over a tree with a directory it cannot read: the
/// asker's locks there were not seen, the exit code is 2, and the document
/// says why in `error` (a consumer never reads exit 2 beside `"error": null`).
#[test]
fn release_all_json_says_what_it_could_not_read() {
    use std::os::unix::fs::PermissionsExt;
    let tables = contract();
    let sb = Sandbox::new();
    let holder = sleeper();
    let pid = holder.pid().to_string();
    let root = sb.path().join("town");
    let mine = sb.worker("town/a");
    sb.claim(&mine, holder.pid(), &[]).success();
    let hidden = sb.worker("town/hidden");
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = sb
        .cmd_no_dac()
        .args(["release", "--all", "--json", "--pid", &pid])
        .arg(&root)
        .output()
        .unwrap();
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v = validate(&tables, "Workers document", "release --all", &out.stdout);
    assert_eq!(v["workers"][0]["action"], "released", "{v:#}");
    assert_eq!(v["error"]["kind"], "io", "{v:#}");
    assert_eq!(v["error"]["path"], hidden.to_str().unwrap(), "{v:#}");
}
