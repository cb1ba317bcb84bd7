//! A real messaging server on loopback for the client library's tests.

#![allow(dead_code)]

use std::path::Path;

use umbra_server::{Server, ServerConfig};

/// A server running in this process until dropped or stopped.
pub struct TestServer {
    /// Its invite link.
    pub invite: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a server with its data in `dir/server`; `tune` changes its
    /// configuration first.
    pub async fn start(dir: &Path, tune: impl FnOnce(&mut ServerConfig)) -> Self {
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            metrics_listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: dir.join("server"),
            ..ServerConfig::default()
        };
        tune(&mut config);
        let server = Server::bind(config).await.expect("bind");
        let invite = server.invite().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            invite,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops it and waits until it has.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}
