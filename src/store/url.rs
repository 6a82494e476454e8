//! Store selection by URL.

use std::path::PathBuf;

use super::StoreError;

/// A parsed `store` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `embedded` (under the data directory) or `embedded://PATH`.
    Embedded(Option<PathBuf>),
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
            "postgres" | "postgresql" => Err(StoreError::FeatureNotEnabled("postgres".into())),
            "kurrentdb" | "esdb" | "esdb+discover" | "kurrentdb+discover" => {
                Err(StoreError::FeatureNotEnabled("kurrentdb".into()))
            }
            _ => Err(StoreError::BadUrl(format!(
                "{url:?}: expected `embedded` or `embedded://PATH`"
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
            StoreUrl::parse("kurrentdb://localhost:2113"),
            Err(StoreError::FeatureNotEnabled(_))
        ));
        assert!(matches!(
            StoreUrl::parse("ftp://x"),
            Err(StoreError::BadUrl(_))
        ));
    }
}
