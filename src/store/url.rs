//! Store selection by URL.

use std::path::PathBuf;

use super::StoreError;

/// A parsed `store` setting.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `embedded` (under the data directory) or `embedded://PATH`.
    Embedded(Option<PathBuf>),
    /// `postgres://…` or `postgresql://…`: a libpq-style URL.
    Postgres(String),
    /// `kurrentdb://…`, `esdb://…` (and their `+discover` forms).
    Kurrent(String),
}

/// Never prints a password.
impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Embedded(p) => f.debug_tuple("Embedded").field(p).finish(),
            StoreUrl::Postgres(u) => f
                .debug_tuple("Postgres")
                .field(&crate::store::postgres::redact(u))
                .finish(),
            StoreUrl::Kurrent(u) => f
                .debug_tuple("Kurrent")
                .field(&crate::store::kurrentdb::redact(u))
                .finish(),
        }
    }
}

impl StoreUrl {
    pub fn parse(url: &str) -> Result<StoreUrl, StoreError> {
        if url == "embedded" || url == "embedded://" {
            return Ok(StoreUrl::Embedded(None));
        }
        if let Some(path) = url.strip_prefix("embedded://") {
            return Ok(StoreUrl::Embedded(Some(PathBuf::from(path))));
        }
        let scheme = url.split("://").next().unwrap_or(url);
        match scheme {
            "postgres" | "postgresql" => {
                crate::store::postgres::parse_url(url)?;
                Ok(StoreUrl::Postgres(url.to_string()))
            }
            "kurrentdb" | "esdb" | "esdb+discover" | "kurrentdb+discover" => {
                crate::store::kurrentdb::parse_url(url)?;
                Ok(StoreUrl::Kurrent(url.to_string()))
            }
            _ => Err(StoreError::BadUrl(format!(
                "{:?}: expected `embedded`, `embedded://PATH`, `postgres://…` or `kurrentdb://…`",
                if url.contains("://") {
                    format!("{scheme}://…")
                } else {
                    "a value without a scheme".to_string()
                }
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_urls() {
        assert_eq!(
            StoreUrl::parse("embedded").ok(),
            Some(StoreUrl::Embedded(None))
        );
        assert_eq!(
            StoreUrl::parse("embedded://./x").ok(),
            Some(StoreUrl::Embedded(Some(PathBuf::from("./x"))))
        );
        assert!(matches!(
            StoreUrl::parse("kurrentdb://localhost:2113?tls=false"),
            Ok(StoreUrl::Kurrent(_))
        ));
        assert!(matches!(
            StoreUrl::parse("esdb://localhost:2113?tls=false"),
            Ok(StoreUrl::Kurrent(_))
        ));
        assert!(matches!(
            StoreUrl::parse("postgres://authlog@localhost/authlog"),
            Ok(StoreUrl::Postgres(_))
        ));
        assert!(matches!(
            StoreUrl::parse("ftp://x"),
            Err(StoreError::BadUrl(_))
        ));
    }
}
