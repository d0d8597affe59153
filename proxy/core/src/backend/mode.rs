//! The proxy mode is the configuration's (`--proxy-mode` / `mode:`); one type, so the flag,
//! the config file, the metrics and the backend choice can never disagree about spellings.

pub use crate::config_file::ProxyMode;
