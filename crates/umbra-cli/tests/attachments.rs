//! Attachments through the real binary, as the README shows them: a photo
//! with a caption and a location in a 1:1 chat, files of 0 and 1 bytes in a
//! group (uploaded once for everyone), each saved back byte for byte; and
//! the server's files and log afterwards hold no file name, caption,
//! location or content.

mod common;

use std::path::Path;

use common::{ServerProc, history, ok};

fn attachments(profile: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(profile, &["--json", "attachments"])).expect("json")
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn blobs_done(data: &Path) -> usize {
    std::fs::read_dir(data.join("blobs").join("done"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_photo_a_location_and_group_files_arrive_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    let log = dir.path().join("server.log");
    let server = ServerProc::start(&data, "127.0.0.1:0", &log);
    let p = |n: &str| dir.path().join(n);
    for user in ["alice", "bob", "carol"] {
        common::register(&p(user), &server.invite, user);
    }
    let photo: Vec<u8> = (0..(1 << 20) + 333).map(|i| (i * 13 % 251) as u8).collect();
    let photo_path = dir.path().join("summit-hike.jpg");
    std::fs::write(&photo_path, &photo).expect("photo");

    let photo_arg = photo_path.to_string_lossy().into_owned();
    ok(
        &p("alice"),
        &["send", "bob", "--file", &photo_arg, "the view from the top"],
    );
    ok(
        &p("alice"),
        &["send", "bob", "--location", "48.8584,2.2945"],
    );
    ok(&p("bob"), &["sync"]);
    let shown = history(&p("bob"), "alice");
    assert!(
        shown
            .iter()
            .any(|(_, t)| t.contains("summit-hike.jpg") && t.contains("the view from the top")),
        "{shown:?}"
    );
    assert!(
        shown
            .iter()
            .any(|(_, t)| t == "[location: 48.858400, 2.294500]"),
        "{shown:?}"
    );
    let listed = attachments(&p("bob"));
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], "summit-hike.jpg");
    assert_eq!(listed[0]["media_type"], "image/jpeg");
    let id = listed[0]["id"].as_str().expect("id").to_string();
    let saved = dir.path().join("bob-got.jpg");
    ok(&p("bob"), &["save", &id[..8], &saved.to_string_lossy()]);
    assert_eq!(std::fs::read(&saved).expect("saved"), photo);
    // The sender's own list knows where the file came from.
    let mine = attachments(&p("alice"));
    assert_eq!(mine.len(), 1);
    assert!(
        mine[0]["path"]
            .as_str()
            .expect("path")
            .ends_with("summit-hike.jpg")
    );

    // A group: each file uploaded once, whatever the number of members.
    ok(&p("alice"), &["group", "create", "trio", "bob", "carol"]);
    for (name, bytes) in [("empty.txt", Vec::new()), ("one.bin", vec![0x42u8])] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).expect("file");
        let before = blobs_done(&data);
        ok(
            &p("alice"),
            &["group", "send", "trio", "--file", &path.to_string_lossy()],
        );
        assert_eq!(blobs_done(&data), before + 2, "one blob and its record");
        for member in ["bob", "carol"] {
            ok(&p(member), &["sync"]);
            let id = attachments(&p(member))
                .into_iter()
                .find(|a| a["name"] == name)
                .unwrap_or_else(|| panic!("{member} has no {name}"))["id"]
                .as_str()
                .expect("id")
                .to_string();
            let out = dir.path().join(format!("{member}-{name}"));
            ok(&p(member), &["save", &id, &out.to_string_lossy()]);
            assert_eq!(
                std::fs::read(&out).expect("saved"),
                bytes,
                "{member} {name}"
            );
        }
    }
    // A wrong id says so.
    let err = common::fails(&p("bob"), &["save", "ffffffffffff"]);
    assert!(err.contains("umbra attachments"), "{err}");
    assert!(server.stop().success());

    // What the server kept: no name, caption, location or content.
    let mut files = files_under(&data);
    files.push(log);
    for f in files {
        let bytes = std::fs::read(&f).expect("read");
        for needle in [
            &b"summit-hike"[..],
            b"the view from the top",
            b"48.8584",
            b"image/jpeg",
            &photo[1000..1064],
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds {:?}",
                f.display(),
                String::from_utf8_lossy(&needle[..needle.len().min(24)])
            );
        }
    }
}
