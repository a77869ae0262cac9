//! The `Mailer` port: how identity sends e-mail (verification, password reset).
//!
//! saas-notify will implement it with real transports. Until then [`FileMailer`] writes each
//! message to a file (`<data_dir>/mail/`, mode 0600), which is what development and tests
//! read; it never logs a message's body, which holds single-use secrets.

use std::path::PathBuf;

use async_trait::async_trait;
use saas_core::error::{Error, Result};

/// One e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// Recipient address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
}

/// Sends e-mail.
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    /// Sends `email`, or fails (the caller decides whether that fails the request).
    async fn send(&self, email: &Email) -> Result<()>;
}

/// Writes each e-mail to a file of its own in a directory.
#[derive(Debug, Clone)]
pub struct FileMailer {
    dir: PathBuf,
}

impl FileMailer {
    /// Writes into `dir` (created when needed).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory messages go to.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

#[async_trait]
impl Mailer for FileMailer {
    async fn send(&self, email: &Email) -> Result<()> {
        let name = format!("{}-{}.eml", saas_core::db::now_millis(), uuid_like()?);
        let path = self.dir.join(name);
        let content = format!("To: {}\nSubject: {}\n\n{}\n", email.to, email.subject, email.text);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            crate::keys::write_private(&path, &content)
        })
        .await
        .map_err(Error::internal)?
        .map_err(|e| Error::internal(anyhow::Error::new(e).context("writing an e-mail file")))?;
        tracing::info!(subject = %email.subject, "e-mail written to the mail directory");
        Ok(())
    }
}

fn uuid_like() -> Result<String> {
    Ok(hex::encode(crate::keys::random::<8>()?))
}
