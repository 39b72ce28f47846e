//! Loads `config.toml`, applies environment overrides, validates: one clear error naming the field.
//!
//! Order: file (or defaults when the default path is absent) → `WASUP__SECTION__KEY=value`
//! for any key → the SPEC's named variables (`PORT`, `LARAVEL_API`, ...) → validation.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, anyhow, bail};
use serde::{Deserialize, Serialize};
use toml::{Table, Value};
use wasup_actors::{
    batch::BatchConfig, breaker::BreakerConfig, cache::CacheConfig, dispatch::MessagesConfig,
    session::SessionConfig, sink::SinkConfig, store::RedisConfig,
};

use crate::engine::EngineConfig;

/// The file read when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "config.toml";
/// Prefix of the generic overrides: `WASUP__BATCH__INTERVAL=1s` sets `batch.interval`.
pub const ENV_PREFIX: &str = "WASUP__";
/// Shortest API key accepted: 32 characters (e.g. `openssl rand -hex 16`).
pub const MIN_API_KEY_CHARS: usize = 32;
/// What `--print-config` shows instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// Every setting of wasup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The REST API.
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
    /// WhatsApp engine.
    pub engine: EngineConfig,
    /// The Laravel backend.
    pub laravel: SinkConfig,
    /// Batching.
    pub batch: BatchConfig,
    /// Circuit breaker.
    pub breaker: BreakerConfig,
    /// Session limits and lifecycle.
    pub sessions: SessionConfig,
    /// Redis: durability and the shared cache.
    pub redis: RedisConfig,
    /// Cache TTLs.
    pub cache: CacheConfig,
    /// Outgoing text messages.
    pub messages: MessagesConfig,
    /// This node's name in inspection and logs; empty means the host name.
    pub node_id: String,
    /// Old setting names read under their new names, one sentence each (logged at start).
    #[serde(skip)]
    pub deprecations: Vec<String>,
}

/// Settings renamed: `(section, old key, new key)`. The old key is read as the new one, with a
/// warning, unless the new one is set too (then the old one is ignored, also with a warning).
const RENAMED: &[(&str, &str, &str)] = &[
    ("sessions", "qr_throttle", "qr_min_interval"),
    ("batch", "interval", "qr_deadline"),
];

/// Moves renamed settings to their new keys; answers what it did, for the start-up log.
fn rename_deprecated(table: &mut Table) -> Vec<String> {
    let mut notes = Vec::new();
    for (section, old, new) in RENAMED {
        let Some(Value::Table(section_table)) = table.get_mut(*section) else {
            continue;
        };
        let Some(value) = section_table.remove(*old) else {
            continue;
        };
        if section_table.contains_key(*new) {
            notes.push(format!(
                "{section}.{old} is ignored: {section}.{new} is set"
            ));
        } else {
            section_table.insert((*new).to_string(), value);
            notes.push(format!(
                "{section}.{old} is deprecated: read as {section}.{new}"
            ));
        }
    }
    notes
}

/// The `[http]` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the REST API.
    pub listen: String,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// On SIGTERM, how long pending batches may take to reach Laravel before wasup exits.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How often every core actor (registry, batch queue, sink, breaker, cache, outgoing queue)
    /// is asked whether it answers (the liveness probe; also paces systemd's `WATCHDOG=1`).
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Probes failed in a row after which wasup exits with status 1, so its supervisor
    /// (systemd's `Restart=on-failure`) restarts it and the Redis outbox brings back what was
    /// pending, instead of a process that answers `/health` and delivers nothing.
    pub probe_failures: u32,
    /// Restarts of one core actor (batch queue, sink, cache, breaker) allowed within
    /// `core_restart_window` after it stopped or panicked; the next time it stays down and the
    /// liveness probe ends the process. 0: never restart in the process.
    pub core_restarts: u32,
    /// The window `core_restarts` counts in.
    #[serde(with = "humantime_serde")]
    pub core_restart_window: Duration,
    /// Key every call but `/health` must carry in `X-Api-Key`, at least
    /// [`MIN_API_KEY_CHARS`] characters. Empty: no key, which is allowed only on a loopback
    /// address.
    pub api_key: String,
    /// Requests per minute per client IP (an IPv6 /64 counts as one) that carry no valid key
    /// (`/health` exempt), so key guessing is slow; 0 disables the limit.
    pub rate_limit_per_minute: u32,
    /// Requests per minute carrying the valid key (a backend like Laravel is one caller; with
    /// no key configured, every caller counts here); 0 disables the limit.
    pub rate_limit_per_key_per_minute: u32,
    /// How many requests with the valid key may come at once before the per-minute rate counts.
    pub rate_limit_per_key_burst: u32,
    /// Reverse proxies (`10.0.0.1`, `10.0.0.0/8`) whose `X-Forwarded-For` names the client and
    /// whose `X-Forwarded-Proto: https` makes the login cookie `Secure`. Empty: trust nobody.
    pub trusted_proxies: Vec<String>,
    /// Host names the `Host` header may carry besides IP literals and `localhost` (against DNS
    /// rebinding); `"*"` allows any.
    pub allowed_hosts: Vec<String>,
    /// How long `/health`'s answer is reused, so it cannot be used to hammer the actors; 0: never.
    #[serde(with = "humantime_serde")]
    pub health_cache_ttl: Duration,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4000".into(),
            workers: 0,
            shutdown_timeout: Duration::from_secs(20),
            probe_interval: Duration::from_secs(5),
            probe_failures: 3,
            core_restarts: 5,
            core_restart_window: Duration::from_secs(60),
            api_key: String::new(),
            rate_limit_per_minute: 100,
            rate_limit_per_key_per_minute: 6000,
            rate_limit_per_key_burst: 1000,
            trusted_proxies: Vec::new(),
            allowed_hosts: Vec::new(),
            health_cache_ttl: Duration::from_millis(500),
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON unless stdout is a terminal.
    Auto,
    /// One JSON object per line (production, journald).
    Json,
    /// Readable, for a terminal.
    Term,
}

/// The `[log]` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `auto`, `json` or `term`.
    pub format: LogFormat,
    /// `trace`, `debug`, `info`, `warning`, `error` or `critical`.
    pub level: String,
    /// The same, for what the WhatsApp library (whatsapp-rust) logs; `info` shows every
    /// connection attempt and reconnect.
    pub library_level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            level: "info".into(),
            library_level: "warning".into(),
        }
    }
}

impl Config {
    /// `node_id`, or the host name when it is empty.
    pub fn node_id(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "wasup".into())
    }

    /// Checks every section.
    pub fn validate(&self) -> Result<(), String> {
        let Ok(listen) = self.http.listen.parse::<std::net::SocketAddr>() else {
            return Err(format!(
                "http.listen must be an address like 127.0.0.1:4000, got {:?}",
                self.http.listen
            ));
        };
        if self.http.api_key.is_empty() && !listen.ip().is_loopback() {
            return Err(format!(
                "http.api_key must be set (WASUP_API_KEY) to listen on the non-loopback address {listen}"
            ));
        }
        if !self.http.api_key.is_empty() && self.http.api_key.chars().count() < MIN_API_KEY_CHARS {
            return Err(format!(
                "http.api_key (WASUP_API_KEY) must be at least {MIN_API_KEY_CHARS} characters, got {}; \
                 make one with `openssl rand -hex 16`",
                self.http.api_key.chars().count()
            ));
        }
        if let Some(bad) = self
            .http
            .trusted_proxies
            .iter()
            .find(|proxy| crate::api::Cidr::parse(proxy).is_none())
        {
            return Err(format!(
                "http.trusted_proxies: {bad:?} is not an address or a range like 10.0.0.0/8"
            ));
        }
        if self.http.rate_limit_per_key_per_minute > 0 && self.http.rate_limit_per_key_burst == 0 {
            return Err("http.rate_limit_per_key_burst must be at least 1".into());
        }
        if self.http.health_cache_ttl > Duration::from_secs(10) {
            return Err("http.health_cache_ttl must be at most 10s".into());
        }
        if self.http.core_restart_window.is_zero() {
            return Err("http.core_restart_window must be above zero".into());
        }
        if self.http.probe_interval.is_zero() || self.http.probe_failures == 0 {
            return Err("http.probe_interval and http.probe_failures must be above zero".into());
        }
        if self.http.max_body_bytes < 1024 {
            return Err("http.max_body_bytes must be at least 1024".into());
        }
        for (field, level) in [
            ("log.level", &self.log.level),
            ("log.library_level", &self.log.library_level),
        ] {
            if level.parse::<slog::Level>().is_err() {
                return Err(format!(
                    "{field} must be one of trace, debug, info, warning, error, critical; got {level:?}"
                ));
            }
        }
        self.engine.validate()?;
        self.laravel.validate()?;
        self.batch.validate()?;
        self.breaker.validate()?;
        self.sessions.validate()?;
        self.redis.validate()?;
        self.cache.validate()?;
        self.messages.validate()?;
        if self.laravel.min_request_gap >= self.batch.priority_delay {
            return Err("laravel.min_request_gap must be shorter than batch.priority_delay, or urgent statuses cannot arrive in time".into());
        }
        Ok(())
    }

    /// A copy with every secret (API key, Laravel token and signing secret, Redis password,
    /// credentials inside URLs) replaced by [`REDACTED`], for `--print-config`.
    pub fn redacted(&self) -> Config {
        let mut copy = self.clone();
        for secret in [
            &mut copy.http.api_key,
            &mut copy.laravel.token,
            &mut copy.laravel.signing_secret,
            &mut copy.redis.password,
        ] {
            if !secret.is_empty() {
                *secret = REDACTED.into();
            }
        }
        copy.laravel.base_url = credentials_replaced(&copy.laravel.base_url, REDACTED);
        copy.redis.url = credentials_replaced(&copy.redis.url, REDACTED);
        for url in &mut copy.redis.urls {
            *url = credentials_replaced(url, REDACTED);
        }
        copy
    }
}

/// `url` with any `user:password@` removed, for logs.
pub fn without_credentials(url: &str) -> String {
    credentials_replaced(url, "")
}

/// `url` with its `user:password` replaced by `by` (nothing: the `@` goes too).
fn credentials_replaced(url: &str, by: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if by.is_empty() => format!("{scheme}://{}", &rest[at + 1..]),
        Some(at) => format!("{scheme}://{by}@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Reads the file at `path` (defaults when `path` is the default and absent), applies `env`
/// overrides, validates.
pub fn load(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<Config> {
    let mut table = match std::fs::read_to_string(path) {
        Ok(text) => text
            .parse::<Table>()
            .map_err(|error| anyhow!("{}: {}", path.display(), one_line(&error.to_string())))?,
        Err(error)
            if error.kind() == std::io::ErrorKind::NotFound
                && path == Path::new(DEFAULT_CONFIG_PATH) =>
        {
            Table::new()
        }
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    apply_env(&mut table, env)?;
    from_table(table)
}

/// Parses a config file's text (no environment), for tests and tooling.
pub fn parse(text: &str) -> anyhow::Result<Config> {
    from_table(
        text.parse::<Table>()
            .map_err(|error| anyhow!(one_line(&error.to_string())))?,
    )
}

fn from_table(mut table: Table) -> anyhow::Result<Config> {
    let deprecations = rename_deprecated(&mut table);
    let mut config: Config =
        serde_path_to_error::deserialize(Value::Table(table)).map_err(|error| {
            let field = error.path().to_string();
            anyhow!(
                "config field {field}: {}",
                one_line(&error.into_inner().to_string())
            )
        })?;
    config.deprecations = deprecations;
    config
        .validate()
        .map_err(|message| anyhow!("config: {message}"))?;
    Ok(config)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The SPEC §6 variable names and the key each sets.
const NAMED_OVERRIDES: &[(&str, &str)] = &[
    ("LARAVEL_API", "laravel.base_url"),
    ("LARAVEL_TOKEN", "laravel.token"),
    ("LARAVEL_SIGNING_SECRET", "laravel.signing_secret"),
    ("WASUP_API_KEY", "http.api_key"),
    ("API_KEY", "http.api_key"),
    ("CIRCUIT_BREAKER_THRESHOLD", "breaker.threshold"),
    ("CIRCUIT_BREAKER_RESET", "breaker.reset_timeout"),
    ("MAX_SESSIONS", "sessions.max_active"),
    ("WASUP_ENGINE", "engine.kind"),
    ("LOG_LEVEL", "log.level"),
    ("MAX_CONCURRENT_MESSAGES", "messages.max_concurrent"),
    ("REDIS_PASSWORD", "redis.password"),
    ("REDIS_URL", "redis.url"),
    ("LOG_FORMAT", "log.format"),
];

fn apply_env(
    table: &mut Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<()> {
    let env: Vec<(String, String)> = env.into_iter().collect();
    for (name, value) in &env {
        if let Some(path) = name.strip_prefix(ENV_PREFIX) {
            let keys: Vec<String> = path.split("__").map(str::to_lowercase).collect();
            if keys.iter().any(String::is_empty) {
                bail!("environment variable {name}: expected WASUP__SECTION__KEY");
            }
            set_path(table, &keys, scalar(value));
        }
    }
    for (variable, key) in NAMED_OVERRIDES {
        if let Some((_, value)) = env.iter().find(|(name, _)| name == variable) {
            let value = if *variable == "CIRCUIT_BREAKER_RESET"
                && value.chars().all(|c| c.is_ascii_digit())
            {
                // The seeds give it in milliseconds.
                Value::String(format!("{value}ms"))
            } else {
                scalar(value)
            };
            let keys: Vec<String> = key.split('.').map(str::to_string).collect();
            set_path(table, &keys, value);
        }
    }
    let host = env
        .iter()
        .find(|(name, _)| name == "REDIS_HOST")
        .map(|(_, value)| value);
    let port = env
        .iter()
        .find(|(name, _)| name == "REDIS_PORT")
        .map(|(_, value)| value);
    if host.is_some() || port.is_some() {
        let port: u16 = port
            .map_or(Ok(6379), |port| port.parse())
            .map_err(|_| anyhow!("environment variable REDIS_PORT: expected a port number"))?;
        let host = host.map_or("127.0.0.1", String::as_str);
        set_path(
            table,
            &["redis".into(), "url".into()],
            Value::String(format!("redis://{host}:{port}/0")),
        );
    }
    if let Some((_, port)) = env.iter().find(|(name, _)| name == "PORT") {
        let port: u16 = port.parse().map_err(|_| {
            anyhow!("environment variable PORT: expected a port number, got {port:?}")
        })?;
        let current = table
            .get("http")
            .and_then(|http| http.get("listen"))
            .and_then(Value::as_str)
            .map_or_else(|| HttpConfig::default().listen, str::to_string);
        let host = current
            .rsplit_once(':')
            .map_or(current.as_str(), |(host, _)| host);
        set_path(
            table,
            &["http".into(), "listen".into()],
            Value::String(format!("{host}:{port}")),
        );
    }
    Ok(())
}

/// An environment value as TOML: numbers and booleans as such, anything else as a string.
fn scalar(text: &str) -> Value {
    match format!("v = {text}").parse::<Table>() {
        Ok(mut table) => match table.remove("v") {
            Some(value @ (Value::Integer(_) | Value::Float(_) | Value::Boolean(_))) => value,
            _ => Value::String(text.to_string()),
        },
        Err(_) => Value::String(text.to_string()),
    }
}

fn set_path(table: &mut Table, keys: &[String], value: Value) {
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        let Value::Table(next) = entry else { return };
        current = next;
    }
    current.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn the_shipped_config_toml_is_the_defaults() {
        let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
            .expect("config.toml");
        assert_eq!(parse(&shipped).expect("valid"), Config::default());
    }

    #[test]
    fn environment_overrides_generic_and_named_keys() {
        let path = Path::new("/nonexistent/config.toml");
        assert!(
            load(path, env(&[])).is_err(),
            "an explicit missing file is an error"
        );
        let config = load(
            Path::new(DEFAULT_CONFIG_PATH)
                .join("does-not-exist")
                .as_path(),
            env(&[]),
        );
        assert!(config.is_err());
        let dir = std::env::temp_dir().join(format!("wasup-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[http]\nlisten = \"0.0.0.0:4000\"\napi_key = \"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"\n",
        )
        .expect("write");
        let config = load(
            &file,
            env(&[
                ("WASUP__BATCH__INTERVAL", "1s"),
                ("WASUP__BATCH__MAX_ITEMS", "10"),
                ("PORT", "4100"),
                ("LARAVEL_API", "http://laravel.test/api"),
                ("CIRCUIT_BREAKER_RESET", "120000"),
                ("CIRCUIT_BREAKER_THRESHOLD", "10"),
                ("REDIS_HOST", "redis.internal"),
                ("REDIS_PORT", "6380"),
                ("REDIS_PASSWORD", "s3cret"),
            ]),
        )
        .expect("valid");
        assert_eq!(
            config.batch.qr_deadline,
            Duration::from_secs(1),
            "the old name, from the environment"
        );
        assert_eq!(config.batch.max_items, 10);
        assert_eq!(config.http.listen, "0.0.0.0:4100");
        assert_eq!(config.laravel.base_url, "http://laravel.test/api");
        assert_eq!(config.breaker.reset_timeout, Duration::from_secs(120));
        assert_eq!(config.breaker.threshold, 10);
        assert_eq!(config.redis.url, "redis://redis.internal:6380/0");
        assert_eq!(config.redis.password, "s3cret");
    }

    #[test]
    fn renamed_settings_are_read_under_their_new_names_with_a_warning() {
        let config = parse("[sessions]\nqr_throttle = \"2s\"\n[batch]\ninterval = \"3s\"\n")
            .expect("parses");
        assert_eq!(config.sessions.qr_min_interval, Duration::from_secs(2));
        assert_eq!(config.batch.qr_deadline, Duration::from_secs(3));
        assert_eq!(config.deprecations.len(), 2, "{:?}", config.deprecations);
        assert!(config.deprecations[0].contains("sessions.qr_throttle is deprecated"));
        let both =
            parse("[sessions]\nqr_throttle = \"2s\"\nqr_min_interval = \"1s\"\n").expect("parses");
        assert_eq!(both.sessions.qr_min_interval, Duration::from_secs(1));
        assert!(both.deprecations[0].contains("ignored"));
        assert!(Config::default().deprecations.is_empty());
    }

    #[test]
    fn an_open_address_needs_an_api_key() {
        let error = parse("[http]\nlisten = \"0.0.0.0:4000\"\n")
            .expect_err("no key")
            .to_string();
        assert!(error.contains("http.api_key"), "{error}");
        assert!(parse("[http]\nlisten = \"0.0.0.0:4000\"\napi_key = \"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"\n").is_ok());
    }

    #[test]
    fn a_short_api_key_is_refused_naming_the_field() {
        let error = parse("[http]\napi_key = \"short\"\n")
            .expect_err("short")
            .to_string();
        assert!(error.contains("http.api_key"), "{error}");
        assert!(error.contains("32"), "{error}");
        assert!(
            !error.contains("short"),
            "the key itself is not echoed: {error}"
        );
        let error = parse("[http]\ntrusted_proxies = [\"10.0.0.0/99\"]\n")
            .expect_err("bad range")
            .to_string();
        assert!(error.contains("http.trusted_proxies"), "{error}");
    }

    #[test]
    fn secrets_are_redacted_and_urls_lose_their_credentials() {
        let mut config = Config::default();
        config.http.api_key = "a".repeat(40);
        config.laravel.token = "laravel-token".into();
        config.laravel.signing_secret = "signing-secret-value".into();
        config.laravel.base_url = "https://user:pw@laravel.test/api".into();
        config.redis.password = "redis-pw".into();
        config.redis.url = "redis://:redis-pw@127.0.0.1:6379/0".into();
        let text = toml::to_string_pretty(&config.redacted()).expect("toml");
        for secret in [
            &*"a".repeat(40),
            "laravel-token",
            "signing-secret-value",
            "redis-pw",
            "user:pw",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("\"<redacted>\""), "{text}");
        assert!(
            text.contains("https://<redacted>@laravel.test/api"),
            "{text}"
        );
        assert_eq!(
            without_credentials("https://user:pw@laravel.test/a@b"),
            "https://laravel.test/a@b"
        );
        assert_eq!(
            without_credentials("http://laravel.test/api"),
            "http://laravel.test/api"
        );
        assert_eq!(without_credentials("not a url"), "not a url");
    }

    #[test]
    fn bad_values_name_the_field_in_one_line() {
        let error = parse("[batch]\nqr_deadline = \"soon\"\n")
            .expect_err("invalid")
            .to_string();
        assert!(error.contains("batch.qr_deadline"), "{error}");
        assert!(!error.contains('\n'), "{error}");
        let error = parse("[batch]\nmax_itemz = 3\n")
            .expect_err("unknown")
            .to_string();
        assert!(error.contains("max_itemz"), "{error}");
        let error = parse("[batch]\nmax_items = 0\n")
            .expect_err("zero")
            .to_string();
        assert!(error.contains("batch.max_items"), "{error}");
        let error = parse("[laravel]\nbase_url = \"ftp://x\"\n")
            .expect_err("scheme")
            .to_string();
        assert!(error.contains("laravel.base_url"), "{error}");
    }
}
