//! The crate layering of ARCHITECTURE.md, checked over `cargo metadata` rather than only
//! written down: the pure core and the flag engine reach no IO crate, the data plane does not
//! reach the control plane, the store does not reach the binary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Crates that do IO (network, files, processes, an async runtime): the pure crates must not
/// reach any of them, directly or through another crate.
const IO: &[&str] = &[
    "tokio",
    "mio",
    "socket2",
    "hyper",
    "hyper-util",
    "h2",
    "axum",
    "rusqlite",
    "libsqlite3-sys",
    "nix",
    "tracing-subscriber",
];

/// One rule: `krate` must not reach any of `forbidden` through its normal dependencies.
pub struct Rule {
    pub krate: &'static str,
    pub forbidden: Vec<&'static str>,
    pub why: &'static str,
}

pub fn rules() -> Vec<Rule> {
    let with_io = |more: &[&'static str]| IO.iter().chain(more).copied().collect::<Vec<_>>();
    vec![
        Rule {
            krate: "ringfence-core",
            forbidden: with_io(&["ringfence-router", "ringfence-store", "ringfence"]),
            why: "the core is pure: no IO, no clock, tested on simulated time",
        },
        Rule {
            krate: "ringfence-flags",
            forbidden: with_io(&["ringfence-core", "ringfence-router", "ringfence-store", "ringfence"]),
            why: "the flag engine is pure, embeddable by any service",
        },
        Rule {
            krate: "ringfence-traffic",
            forbidden: with_io(&["ringfence-core", "ringfence-router", "ringfence-store", "ringfence"]),
            why: "what the router and the core share must be pure, or one of them would inherit IO or the other",
        },
        Rule {
            krate: "ringfence-router",
            forbidden: vec!["ringfence-core", "ringfence-store", "ringfence"],
            why: "the data plane never waits on the control plane: of ringfence's crates it uses only the pure flag engine and traffic types",
        },
        Rule {
            krate: "ringfence-api",
            forbidden: with_io(&["ringfence-core", "ringfence-router", "ringfence-store", "ringfence"]),
            why: "the wire types are the API's contract apart from the core: a client needs them and nothing of the server",
        },
        Rule {
            krate: "ringfence-store",
            forbidden: vec!["ringfence-router", "ringfence"],
            why: "the event store knows events, not the server or the router",
        },
    ]
}

/// Package name -> the names of its normal (not dev, not build) dependencies.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// The normal-dependency graph of the workspace, from `cargo metadata`.
pub fn graph(root: &Path) -> Result<Graph, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("could not run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata printed no JSON: {e}"))?;
    parse(&meta)
}

fn parse(meta: &serde_json::Value) -> Result<Graph, String> {
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .ok_or("cargo metadata: no packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let mut graph = Graph::new();
    for node in meta["resolve"]["nodes"].as_array().ok_or("cargo metadata: no resolve graph")? {
        let Some(name) = node["id"].as_str().and_then(|id| names.get(id)) else { continue };
        let deps = graph.entry(name.to_string()).or_default();
        for dep in node["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"].as_array().into_iter().flatten().any(|k| k["kind"].is_null());
            if let (true, Some(dep_name)) = (normal, dep["pkg"].as_str().and_then(|id| names.get(id))) {
                deps.insert(dep_name.to_string());
            }
        }
    }
    Ok(graph)
}

/// Every rule broken, with the path by which the forbidden crate is reached.
pub fn violations(graph: &Graph, rules: &[Rule]) -> Vec<String> {
    let mut out = Vec::new();
    for rule in rules {
        // Breadth-first from the crate, remembering how each crate was reached.
        let mut via: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([rule.krate]);
        let mut seen = BTreeSet::from([rule.krate]);
        while let Some(at) = queue.pop_front() {
            for dep in graph.get(at).into_iter().flatten() {
                if seen.insert(dep.as_str()) {
                    via.insert(dep.as_str(), at);
                    queue.push_back(dep.as_str());
                }
            }
        }
        for bad in &rule.forbidden {
            if !seen.contains(bad) {
                continue;
            }
            let mut path = vec![*bad];
            while let Some(prev) = via.get(path.last().expect("never empty")) {
                path.push(prev);
            }
            path.reverse();
            out.push(format!("{} depends on {} ({}): {}", rule.krate, bad, path.join(" -> "), rule.why));
        }
    }
    out
}

/// Modules of the binary crate that must not reach others (the crate boundary cannot say it
/// yet): the CLI and the API client stay apart from the server. The wire types are a crate of
/// their own (`ringfence-api`), kept apart by the crate rules above.
const MODULE_RULES: &[(&str, &[&str], &str)] = &[
    (
        "crates/ringfence/src/cli.rs",
        &["crate::server", "crate::state", "crate::controller"],
        "the CLI speaks the API through `ringfence-api` and `client`, not through the server",
    ),
    (
        "crates/ringfence/src/cli/drill.rs",
        &["crate::server", "crate::state", "crate::controller"],
        "the CLI speaks the API through `ringfence-api` and `client`, not through the server",
    ),
    (
        "crates/ringfence/src/client.rs",
        &["crate::server", "crate::state", "crate::controller"],
        "the API client knows the wire types, not the server",
    ),
];

/// Every module rule a source text breaks.
pub fn module_violations(file: &str, text: &str) -> Vec<String> {
    MODULE_RULES
        .iter()
        .filter(|(f, _, _)| *f == file)
        .flat_map(|(f, forbidden, why)| {
            forbidden.iter().filter(|m| text.contains(*m)).map(move |m| format!("{f} uses {m}: {why}"))
        })
        .collect()
}

pub fn check_workspace(root: &Path) -> Result<(), String> {
    let mut modules = Vec::new();
    for (file, _, _) in MODULE_RULES {
        let text = std::fs::read_to_string(root.join(file)).map_err(|e| format!("cannot read {file}: {e}"))?;
        modules.extend(module_violations(file, &text));
    }
    if !modules.is_empty() {
        return Err(format!("the module layering is broken:\n  {}", modules.join("\n  ")));
    }
    let graph = graph(root)?;
    let rules = rules();
    for rule in &rules {
        if !graph.contains_key(rule.krate) {
            return Err(format!("layering rule for {} names a crate that is not in the workspace", rule.krate));
        }
    }
    let broken = violations(&graph, &rules);
    if broken.is_empty() { Ok(()) } else { Err(format!("the crate layering is broken:\n  {}", broken.join("\n  "))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph_of(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new();
        for (from, to) in edges {
            g.entry(from.to_string()).or_default().insert(to.to_string());
            g.entry(to.to_string()).or_default();
        }
        g
    }

    #[test]
    fn the_workspace_keeps_its_layering() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("workspace root");
        check_workspace(root).unwrap();
    }

    #[test]
    fn an_io_crate_reached_through_another_is_caught_with_its_path() {
        let g = graph_of(&[("ringfence-core", "serde"), ("ringfence-core", "helper"), ("helper", "tokio")]);
        let v = violations(&g, &rules());
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].starts_with("ringfence-core depends on tokio (ringfence-core -> helper -> tokio)"), "{v:?}");
    }

    #[test]
    fn the_router_may_not_reach_the_core_and_a_clean_graph_passes() {
        let g = graph_of(&[("ringfence-router", "ringfence-flags"), ("ringfence-router", "ringfence-core")]);
        let v = violations(&g, &rules());
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("the data plane never waits"), "{v:?}");
        let clean = graph_of(&[("ringfence-router", "ringfence-flags"), ("ringfence-core", "ringfence-flags")]);
        assert!(violations(&clean, &rules()).is_empty());
    }

    #[test]
    fn the_cli_may_not_reach_the_server() {
        let v = module_violations("crates/ringfence/src/cli.rs", "use crate::server::WorkloadStatus;");
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("not through the server"), "{v:?}");
        assert!(module_violations("crates/ringfence/src/cli.rs", "use ringfence_api::WorkloadStatus;").is_empty());
    }

    #[test]
    fn the_wire_types_may_not_reach_the_core() {
        let g = graph_of(&[("ringfence-api", "utoipa"), ("ringfence-api", "ringfence-core")]);
        let v = violations(&g, &rules());
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("the API's contract apart from the core"), "{v:?}");
    }

    #[test]
    fn only_normal_dependencies_count() {
        let meta = serde_json::json!({
            "packages": [
                {"id": "core 1", "name": "ringfence-core"},
                {"id": "tokio 1", "name": "tokio"},
                {"id": "serde 1", "name": "serde"},
            ],
            "resolve": {"nodes": [
                {"id": "core 1", "deps": [
                    {"pkg": "tokio 1", "dep_kinds": [{"kind": "dev"}]},
                    {"pkg": "serde 1", "dep_kinds": [{"kind": null}]},
                ]},
            ]},
        });
        let g = parse(&meta).unwrap();
        assert_eq!(g["ringfence-core"], BTreeSet::from(["serde".to_string()]));
    }
}
