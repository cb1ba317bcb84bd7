//! Attachment blobs over real sockets, anonymous on both ends: uploaded in
//! order and resumed after the server restarts mid-upload; never readable
//! before the last byte; a stranger without the write token can neither
//! write, learn the upload's progress, nor delete; over the size limit or
//! the node's hourly budget is refused with a clear code; and the server's
//! directory holds only the sealed bytes and a fixed-size record.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Client, config, error_code, is_accepted, start};
use sha2::{Digest, Sha256};
use umbra_wire::proto::{self, ErrorCode, client_frame::Body as Req, server_frame::Body as Resp};

async fn create(c: &mut Client, size: u64, token: &[u8]) -> Resp {
    c.call(Req::CreateBlob(proto::CreateBlob {
        size,
        write_hash: Sha256::digest(token).to_vec(),
    }))
    .await
}

async fn put(c: &mut Client, id: &[u8], token: &[u8], offset: u64, data: &[u8]) -> Resp {
    c.call(Req::PutBlob(proto::PutBlob {
        blob_id: id.to_vec(),
        write_token: token.to_vec(),
        offset,
        data: data.to_vec(),
    }))
    .await
}

async fn get(c: &mut Client, id: &[u8], offset: u64, max: u32) -> Resp {
    c.call(Req::GetBlob(proto::GetBlob {
        blob_id: id.to_vec(),
        offset,
        max_bytes: max,
    }))
    .await
}

fn state(r: &Resp) -> (u64, bool) {
    match r {
        Resp::BlobState(s) => (s.received, s.complete),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_uploads_resumes_across_a_restart_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let token = b"the uploader's secret token......";
    let srv = start(config(dir.path())).await;
    let mut up = Client::connect(&srv.invite).await;
    let Resp::BlobCreated(created) = create(&mut up, data.len() as u64, token).await else {
        panic!("not created")
    };
    let id = created.blob_id;
    assert_eq!(id.len(), 16);
    assert_eq!(
        state(&put(&mut up, &id, token, 0, &data[..100_000]).await),
        (100_000, false)
    );
    // Nobody reads a blob before its last byte.
    let mut reader = Client::connect(&srv.invite).await;
    assert_eq!(
        error_code(&get(&mut reader, &id, 0, 1000).await),
        Some(ErrorCode::NoSuchBlob)
    );
    // A stranger with the id but not the token: no writing, no progress,
    // no deleting; the same answer as for a blob that does not exist.
    let stranger = b"a guess";
    assert_eq!(
        error_code(&put(&mut reader, &id, stranger, 100_000, b"junk").await),
        Some(ErrorCode::NoSuchBlob)
    );
    assert_eq!(
        error_code(&put(&mut reader, &id, stranger, 0, b"").await),
        Some(ErrorCode::NoSuchBlob)
    );
    let r = reader
        .call(Req::DeleteBlob(proto::DeleteBlob {
            blob_id: id.clone(),
            write_token: stranger.to_vec(),
        }))
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::NoSuchBlob));
    // Out of order: refused, saying where to go on from.
    let r = put(&mut up, &id, token, 150_000, &data[150_000..160_000]).await;
    assert_eq!(error_code(&r), Some(ErrorCode::BlobOffset));
    let Resp::Error(e) = &r else { panic!() };
    assert!(e.message.contains("100000"), "{}", e.message);

    // The server stops mid-upload and starts again on the same directory:
    // a new connection asks where the upload stands and goes on.
    srv.stop().await;
    let srv = start(config(dir.path())).await;
    let mut up = Client::connect(&srv.invite).await;
    assert_eq!(
        state(&put(&mut up, &id, token, 0, b"").await),
        (100_000, false)
    );
    assert_eq!(
        state(&put(&mut up, &id, token, 100_000, &data[100_000..]).await),
        (data.len() as u64, true)
    );
    // A write after the last byte (a retry) changes nothing.
    assert_eq!(
        state(&put(&mut up, &id, token, data.len() as u64, b"x").await),
        (data.len() as u64, true)
    );
    let mut reader = Client::connect(&srv.invite).await;
    let mut got = Vec::new();
    while got.len() < data.len() {
        match get(&mut reader, &id, got.len() as u64, 64 * 1024).await {
            Resp::BlobData(d) => {
                assert_eq!(d.size, data.len() as u64);
                assert!(!d.data.is_empty());
                got.extend(d.data);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, data);

    // On disk: the bytes as sent, a 44-byte record, and nothing else.
    let mut files: Vec<(String, u64)> = Vec::new();
    for sub in ["partial", "done"] {
        for e in std::fs::read_dir(dir.path().join("blobs").join(sub)).unwrap() {
            let e = e.unwrap();
            files.push((
                format!("{sub}/{}", e.file_name().to_string_lossy()),
                e.metadata().unwrap().len(),
            ));
        }
    }
    files.sort();
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        files,
        vec![
            (format!("done/{hex}"), data.len() as u64),
            (format!("done/{hex}.meta"), 44)
        ]
    );

    // The uploader deletes it; then it is gone for everyone.
    let r = up
        .call(Req::DeleteBlob(proto::DeleteBlob {
            blob_id: id.clone(),
            write_token: token.to_vec(),
        }))
        .await;
    assert!(is_accepted(&r), "{r:?}");
    assert_eq!(
        error_code(&get(&mut reader, &id, 0, 10).await),
        Some(ErrorCode::NoSuchBlob)
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_blobs_and_a_spent_budget_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_blob_bytes = 1_000_000;
    cfg.blob_bytes_per_hour = 1_500_000;
    let srv = start(cfg).await;
    let mut c = Client::connect(&srv.invite).await;
    let r = create(&mut c, 1_000_001, b"t").await;
    assert_eq!(error_code(&r), Some(ErrorCode::BlobTooLarge));
    let Resp::Error(e) = &r else { panic!() };
    assert!(e.message.contains("1000000"), "{}", e.message);
    assert!(matches!(
        create(&mut c, 1_000_000, b"t").await,
        Resp::BlobCreated(_)
    ));
    // The hour's budget is reserved when a blob is made: a second large
    // one waits for the next hour.
    assert_eq!(
        error_code(&create(&mut c, 600_000, b"t").await),
        Some(ErrorCode::Busy)
    );
    assert!(matches!(
        create(&mut c, 400_000, b"t").await,
        Resp::BlobCreated(_)
    ));
    // Malformed requests.
    let r = c
        .call(Req::CreateBlob(proto::CreateBlob {
            size: 10,
            write_hash: vec![1; 5],
        }))
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::InvalidArgument));
    assert_eq!(
        error_code(&get(&mut c, &[1; 3], 0, 10).await),
        Some(ErrorCode::InvalidArgument)
    );
    srv.stop().await;
}
