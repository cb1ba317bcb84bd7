//! A small bench run against an in-process server on 127.0.0.1.

#![allow(clippy::unwrap_used)]

use umbra_bench::BenchArgs;
use umbra_server::{Server, ServerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_run_delivers_everything_and_measures_memory() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..ServerConfig::default()
    };
    let server = Server::bind(config).await.unwrap();
    let invite = server.invite().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let join = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));

    let args = BenchArgs {
        clients: 4,
        messages: 2_000,
        window: 16,
        max_secs: 60,
        idle_connections: 50,
        // The server runs in this process.
        server_pid: Some(std::process::id()),
        quiet: true,
        ..BenchArgs::new(invite)
    };
    let report = umbra_bench::run(&args).await.unwrap();
    assert_eq!(report.throughput.delivered, 2_000, "{report}");
    assert!(!report.throughput.timed_out);
    assert!(report.throughput.p99_ms > 0.0);
    let mem = report.memory.clone().expect("memory phase ran");
    assert_eq!(mem.connections, 50);
    assert!(report.to_string().contains("msg/s"));

    let _ = tx.send(());
    join.await.unwrap().unwrap();
}
