//! Groups that never fork. Four members, each its own `umbra` process,
//! change one group at the same moment (adds and removes, in an order the
//! scheduler and random start delays pick), round after round, each sending
//! a message after its change; then one member is killed at random moments
//! in the middle of a change (after its commit was claimed and before its
//! envelopes went out, some of the time) while another changes the group
//! next. Afterwards every member is in the same epoch with the same members,
//! and has every message the others sent.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{ServerProc, ok};
use rand::Rng;

const MEMBERS: usize = 4;
const ROUNDS: usize = 3;

fn spawn(profile: &Path, args: &[String]) -> Child {
    common::command(profile)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// (epoch, members) of `g` as `profile` sees it.
fn view(profile: &Path) -> (u64, BTreeSet<String>) {
    let out = ok(profile, &["--json", "conversations"]);
    let v: serde_json::Value = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON in {out}"));
    let list = v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]);
    let g = list
        .iter()
        .find(|c| c["name"] == "g")
        .unwrap_or_else(|| panic!("no conversation g in {out}"));
    let members = g["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    (g["epoch"].as_u64().unwrap(), members)
}

#[test]
fn members_changing_a_group_at_once_never_split_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServerProc::node(dir.path());
    let p = |u: &str| -> PathBuf { dir.path().join(u) };
    let members: Vec<String> = (0..MEMBERS).map(|i| format!("member{i}")).collect();
    let extras: Vec<String> = (0..ROUNDS * MEMBERS + 8)
        .map(|i| format!("extra{i}"))
        .collect();
    for u in members.iter().chain(&extras) {
        common::register(&p(u), &node.invite, u);
    }
    let mut create = vec!["group", "create", "g"];
    create.extend(members[1..].iter().map(String::as_str));
    ok(&p(&members[0]), &create);
    for m in &members[1..] {
        ok(&p(m), &["sync"]);
    }

    let mut rng = rand::thread_rng();
    let mut sent: Vec<String> = Vec::new();
    let mut next_extra = 0;
    let mut in_group: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        // Everyone at once: odd rounds remove what the round before added.
        let mut children = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let args: Vec<String> = if round % 2 == 1 && !in_group.is_empty() {
                let who = in_group.remove(0);
                vec!["group".into(), "remove".into(), "g".into(), who]
            } else {
                let who = extras[next_extra].clone();
                next_extra += 1;
                in_group.push(who.clone());
                vec!["group".into(), "add".into(), "g".into(), who]
            };
            let delay = Duration::from_millis(rng.gen_range(0..60));
            let text = format!("round {round} from member{i}");
            sent.push(text.clone());
            let profile = p(m);
            children.push(std::thread::spawn(move || {
                std::thread::sleep(delay);
                let change = spawn(&profile, &args).wait_with_output().unwrap();
                let send = spawn(&profile, &["group".into(), "send".into(), "g".into(), text])
                    .wait_with_output()
                    .unwrap();
                (args, change, send)
            }));
        }
        for c in children {
            let (args, change, send) = c.join().unwrap();
            assert!(
                change.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&change.stderr)
            );
            assert!(
                send.status.success(),
                "send after {args:?}: {}",
                String::from_utf8_lossy(&send.stderr)
            );
        }
        for m in &members {
            ok(&p(m), &["sync"]);
        }
        let views: Vec<_> = members.iter().map(|m| view(&p(m))).collect();
        assert!(
            views.iter().all(|v| *v == views[0]),
            "round {round}: the members disagree: {views:#?}"
        );
    }

    // member0 is killed at a random moment of a change, and member1 changes
    // the group next, before member0 runs again.
    for k in 0..4 {
        let who = extras[next_extra].clone();
        next_extra += 1;
        let mut child = spawn(
            &p(&members[0]),
            &["group".into(), "add".into(), "g".into(), who],
        );
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..400)));
        let _ = child.kill();
        let _ = child.wait();
        let who = extras[next_extra].clone();
        next_extra += 1;
        ok(&p(&members[1]), &["group", "add", "g", &who]);
        let text = format!("after kill {k} from member1");
        ok(&p(&members[1]), &["group", "send", "g", &text]);
        sent.push(text);
    }
    for _ in 0..2 {
        for m in &members {
            ok(&p(m), &["sync"]);
        }
    }
    let views: Vec<_> = members.iter().map(|m| view(&p(m))).collect();
    assert!(
        views.iter().all(|v| *v == views[0]),
        "after the kills the members disagree: {views:#?}"
    );
    for (i, m) in members.iter().enumerate() {
        let shown: Vec<String> = common::history(&p(m), "g")
            .into_iter()
            .map(|(_, body)| body)
            .collect();
        for text in &sent {
            let own = text.ends_with(&format!("member{i}"));
            assert!(
                own || shown.contains(text),
                "member{i} never got `{text}`: {shown:#?}"
            );
        }
    }
    let won = node.metric("umbra_epochs_won_total");
    let lost = node.metric("umbra_epochs_lost_total");
    eprintln!("epochs won {won}, claims lost {lost}");
    assert!(
        lost >= 1.0,
        "no two changes ever met: the test proves nothing"
    );
}
