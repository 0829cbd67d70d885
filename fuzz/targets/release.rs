//! A release request body as the server checks it, through the pure crates: its flags loaded
//! as flagd loads them and prepared for the log, the configuration's code-loading keys, and
//! `command::create_release` against a workload.
//!
//! Never a panic; a refusal names the field or the conflict; an accepted release survives
//! the event log's JSON.

use std::sync::OnceLock;

use ringfence_core::release::{self, ReleaseRequest};
use ringfence_core::state::World;
use ringfence_core::{EventKind, NewEvent, Timestamp, command, spec};

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let mut world = World::default();
        let spec = spec::parse("checkout.toml", spec::EXAMPLE).expect("the example spec is valid");
        let kind = command::apply_spec(&world, &spec).expect("valid").expect("new");
        let e = NewEvent {
            at: Timestamp(0),
            actor: "alice".into(),
            reason: String::new(),
            workload: "checkout".into(),
            kind,
        };
        world.apply(&e.numbered(1));
        world
    })
}

pub fn release_body(data: &[u8]) {
    let Ok(mut req) = serde_json::from_slice::<ReleaseRequest>(data) else { return };
    if let Some(flags) = req.content.flags.as_mut()
        && ringfence_flags::FlagSet::parse_lenient(&flags.to_string()).is_ok()
    {
        ringfence_flags::prepare_document(flags);
    }
    let _ = release::code_loading_keys(&req.content.config);
    match command::create_release(world(), "checkout", &req, "alice", Timestamp(1)) {
        Ok((kind, created)) => {
            let kind = kind.expect("a release new to the workload is recorded");
            let json = serde_json::to_string(&kind).expect("the event serializes");
            let back: EventKind = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("a release does not read back from the log: {e}\n{json}"));
            assert_eq!(back, kind, "a release changes through the log");
            assert_eq!(created.digest, created.content.digest(), "the digest is not the content's");
        }
        Err(e) => assert!(!e.message.trim().is_empty(), "a refusal says nothing: {e:?}"),
    }
}
