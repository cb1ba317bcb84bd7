//! Attachment transfers against a real server: files of 0 bytes, 1 byte
//! and 1 MiB come back byte for byte; the server holds only a padded blob
//! whose bytes are not the file's; a download cut short resumes from its
//! `.part` file; a blob altered on the server, or opened with another key,
//! is refused and leaves no file behind.

mod common;

use std::path::Path;

use common::TestServer;
use umbra_client::transfer::{BlobRef, download, part_path, upload};
use umbra_crypto::attachment::{AttachmentKey, sealed_len};
use umbra_net::dial::Route;
use umbra_wire::invite::Invite;

fn file_of(dir: &Path, name: &str, len: usize) -> std::path::PathBuf {
    let data: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write");
    p
}

fn blob_file(data_dir: &Path, id: &[u8]) -> std::path::PathBuf {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    data_dir.join("blobs").join("done").join(hex)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_resume_and_refuse_tampering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), |_| {}).await;
    let data_dir = dir.path().join("server");
    let invite = Invite::parse(&server.invite).expect("invite");
    let route = Route::Direct(invite.address());
    let mut none = |_: u64, _: u64| {};

    for (name, len) in [("empty", 0usize), ("one", 1), ("mib", 1 << 20)] {
        let src = file_of(dir.path(), name, len);
        let up = upload(&invite, &route, &src, &mut none)
            .await
            .expect("upload");
        assert_eq!(up.blob.size, len as u64);
        // The server's copy: padded, and none of the file's bytes in clear.
        let stored = std::fs::read(blob_file(&data_dir, &up.blob.blob_id)).expect("blob");
        assert_eq!(stored.len() as u64, sealed_len(len as u64));
        assert!(stored.len() >= 4096 + 16, "small files are padded");
        let original = std::fs::read(&src).expect("src");
        if len >= 64 {
            assert!(
                !stored.windows(64).any(|w| w == &original[..64]),
                "the file's bytes are on the server"
            );
        }
        let dest = dir.path().join(format!("{name}.out"));
        let mut seen = 0;
        let mut progress = |done: u64, total: u64| {
            assert!(done <= total);
            seen += 1;
        };
        download(&invite, &route, &up.blob, &dest, &mut progress)
            .await
            .expect("download");
        assert!(seen > 0);
        assert_eq!(std::fs::read(&dest).expect("dest"), original, "{name}");
        assert!(!part_path(&dest).exists());
    }

    // A download cut short: what it had is kept in the .part file and the
    // next one goes on from there.
    let src = file_of(dir.path(), "resumed", 300_000);
    let up = upload(&invite, &route, &src, &mut none)
        .await
        .expect("upload");
    let dest = dir.path().join("resumed.out");
    let stored = std::fs::read(blob_file(&data_dir, &up.blob.blob_id)).expect("blob");
    std::fs::write(part_path(&dest), &stored[..100_000]).expect("part");
    download(&invite, &route, &up.blob, &dest, &mut none)
        .await
        .expect("resumed download");
    assert_eq!(
        std::fs::read(&dest).expect("dest"),
        std::fs::read(&src).expect("src")
    );

    // The wrong key: refused, and no file appears.
    let wrong = dir.path().join("wrong.out");
    let other = BlobRef {
        key: AttachmentKey::generate(),
        ..up.blob.clone()
    };
    let e = download(&invite, &route, &other, &wrong, &mut none)
        .await
        .expect_err("another key");
    assert!(e.to_string().contains("altered"), "{e}");
    assert!(!wrong.exists());

    // A byte changed on the server (the operator, or a broken disk):
    // refused by the digest, and no file appears.
    let mut altered = stored.clone();
    altered[5000] ^= 1;
    std::fs::write(blob_file(&data_dir, &up.blob.blob_id), &altered).expect("tamper");
    let tampered = dir.path().join("tampered.out");
    let e = download(&invite, &route, &up.blob, &tampered, &mut none)
        .await
        .expect_err("altered");
    assert!(e.to_string().contains("altered"), "{e}");
    assert!(!tampered.exists());
    assert!(!part_path(&tampered).exists());
    server.stop().await;
}
