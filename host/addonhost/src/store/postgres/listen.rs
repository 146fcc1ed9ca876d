//! New releases as the database announces them (`LISTEN`), on a direct
//! connection of its own: a transaction-pooling PgBouncer cannot carry a
//! `LISTEN` across transactions.

use futures_util::StreamExt;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, NoTls, Socket};

use super::conninfo::Settings;
use super::RELEASES_CHANNEL;

/// Forwards the database's release notifications to `tx`, connecting
/// again (after a pause) whenever the connection is lost.
pub async fn listen(settings: Settings, tx: tokio::sync::broadcast::Sender<String>, db: String) {
    let tls = match super::tls::client_config(&settings.tls) {
        Ok(tls) => tls,
        Err(e) => {
            tracing::warn!("cannot listen for releases on {db}: {e:#}");
            return;
        }
    };
    loop {
        let outcome = match &tls {
            None => once(&settings, NoTls, &tx).await,
            Some(c) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new((**c).clone());
                once(&settings, tls, &tx).await
            }
        };
        if let Err(e) = outcome {
            tracing::warn!("cannot listen for releases on {db}: {e}");
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// One connection's life: `LISTEN`, then forward until it ends.
async fn once<T>(
    settings: &Settings,
    tls: T,
    tx: &tokio::sync::broadcast::Sender<String>,
) -> Result<(), String>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = settings
        .config
        .connect(tls)
        .await
        .map_err(|e| super::tls::explain(&e, settings))?;
    let (found, mut notes) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(msg) = messages.next().await {
            match msg {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = found.send(n.payload().to_string());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let listened = client
        .batch_execute(&format!("LISTEN {RELEASES_CHANNEL}"))
        .await
        .map_err(|e| e.to_string());
    if listened.is_ok() {
        // Whatever happened while not listening: tell every subscriber to
        // look (an empty app name means "any").
        let _ = tx.send(String::new());
        while let Some(app) = notes.recv().await {
            let _ = tx.send(app);
        }
    }
    driver.abort();
    listened
}
