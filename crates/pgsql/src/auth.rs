//! Connection start: SCRAM-SHA-256 password authentication (what PostgreSQL clients expect; the
//! password never crosses the wire) or trust on loopback, the parameters a server reports, and
//! failed logins counted per client address.

use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{
    SCRAM_ITERATIONS, ScramAuth, gen_salted_password,
};
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
};
use datafusion_postgres::pgwire::api::{
    ClientInfo, PgWireServerHandlers, PidSecretKeyGenerator, RandomPidSecretKeyGenerator,
};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use futures::Sink;
use skystream_netguard::AuthLimiter;
use tracing::info;

use crate::service::SessionService;

/// The client-metadata key datafusion-postgres keeps a session's `statement_timeout` in.
pub(crate) const STATEMENT_TIMEOUT_KEY: &str = "statement_timeout_ms";

/// The PostgreSQL release whose behaviour clients should assume.
pub(crate) const PG_VERSION: &str = "16.6";

/// The parameters reported to every client at login.
pub(crate) fn parameters() -> DefaultServerParameterProvider {
    let mut p = DefaultServerParameterProvider::default();
    p.server_version = PG_VERSION.to_string();
    p.search_path = "lake, live, public".to_string();
    p.is_superuser = false;
    p.default_transaction_read_only = true;
    p
}

/// The one account, as SCRAM needs it: the password salted and hashed once, at start.
#[derive(Debug)]
pub(crate) struct Account {
    user: String,
    salt: Vec<u8>,
    salted: Vec<u8>,
    /// What a wrong user name is checked against: it never matches.
    decoy: Vec<u8>,
}

impl Account {
    pub(crate) fn new(user: &str, password: &str) -> Self {
        let salt: [u8; 16] = random_bytes();
        let decoy: [u8; 32] = random_bytes();
        Self {
            user: user.to_string(),
            salt: salt.to_vec(),
            salted: gen_salted_password(password, &salt, SCRAM_ITERATIONS),
            decoy: decoy.to_vec(),
        }
    }
}

/// Bytes from the standard library's randomly keyed hasher (the `rand` crate is not a
/// dependency): each call hashes a fresh `RandomState`.
fn random_bytes<const N: usize>() -> [u8; N] {
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        let v = h.finish().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    out
}

#[async_trait]
impl AuthSource for Account {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        // A wrong user goes through the same exchange and fails it: no hint which part was
        // wrong.
        let salted = if login.user() == Some(self.user.as_str()) {
            self.salted.clone()
        } else {
            self.decoy.clone()
        };
        Ok(Password::new(Some(self.salt.clone()), salted))
    }
}

/// How clients log in.
pub(crate) enum Login {
    /// Any client (loopback only).
    Trust,
    /// SCRAM-SHA-256 against the one account.
    Scram(Arc<Account>),
}

/// The startup handler of one connection.
pub(crate) struct Startup {
    login: StartupKind,
    peer: IpAddr,
    failures: Arc<AuthLimiter>,
}

enum StartupKind {
    Trust(RandomPidSecretKeyGenerator),
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

impl Startup {
    pub(crate) fn new(login: &Login, peer: IpAddr, failures: Arc<AuthLimiter>) -> Self {
        let login = match login {
            Login::Trust => StartupKind::Trust(RandomPidSecretKeyGenerator::default()),
            Login::Scram(account) => {
                let scram = ScramAuth::new(account.clone() as Arc<dyn AuthSource>);
                StartupKind::Scram(Box::new(
                    SASLAuthStartupHandler::new(Arc::new(parameters())).with_scram(scram),
                ))
            }
        };
        Self {
            login,
            peer,
            failures,
        }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match &self.login {
            StartupKind::Trust(pids) => {
                if let PgWireFrontendMessage::Startup(ref startup) = message {
                    protocol_negotiation(client, startup).await?;
                    save_startup_parameters_to_metadata(client, startup);
                    let (pid, key) = pids.generate(client);
                    client.set_pid_and_secret_key(pid, key);
                    let login = LoginInfo::from_client_info(client);
                    info!(user = login.user().unwrap_or(""), peer = %self.peer, "SQL client connected (trust)");
                    finish_authentication(client, &parameters()).await?;
                }
                Ok(())
            }
            StartupKind::Scram(h) => {
                let password_step =
                    matches!(message, PgWireFrontendMessage::PasswordMessageFamily(_));
                let r = h.on_startup(client, message).await;
                if r.is_err() && password_step {
                    let user = client.metadata().get("user").cloned().unwrap_or_default();
                    info!(%user, peer = %self.peer, "SQL client refused: wrong user or password");
                    self.failures.failed(self.peer);
                    return Err(PgWireError::InvalidPassword(user));
                }
                r
            }
        }
    }
}

/// The handlers of one connection: its session and its startup.
pub(crate) struct Handlers {
    pub(crate) service: Arc<SessionService>,
    pub(crate) startup: Arc<Startup>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(
        &self,
    ) -> Arc<impl datafusion_postgres::pgwire::api::query::SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(
        &self,
    ) -> Arc<impl datafusion_postgres::pgwire::api::query::ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }
}

/// Equal strings, compared without an early exit.
#[cfg(test)]
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_differ() {
        let a: [u8; 16] = random_bytes();
        let b: [u8; 16] = random_bytes();
        assert!(!same(&a, &b));
    }

    #[tokio::test]
    async fn wrong_users_get_the_decoy() {
        let a = Account::new("skystream", "secret");
        let right = a
            .get_password(&LoginInfo::new(Some("skystream"), None, "127.0.0.1".into()))
            .await
            .unwrap();
        let wrong = a
            .get_password(&LoginInfo::new(Some("root"), None, "127.0.0.1".into()))
            .await
            .unwrap();
        assert_eq!(right.salt(), wrong.salt());
        assert_ne!(right.password(), wrong.password());
        assert_eq!(
            right.password(),
            gen_salted_password("secret", right.salt().unwrap(), SCRAM_ITERATIONS)
        );
    }
}
