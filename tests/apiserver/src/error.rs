//! API errors and their wire form.
//!
//! Clients (kube, kubectl) decide what to do from the `Status` object's `code` and `reason`
//! (retry on 409, re-list on 410, "not found" handling), so every failure is returned as a real
//! `Status` rather than plain text.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A failed API request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The object (or URL) does not exist.
    #[error("{plural} \"{name}\" not found")]
    NotFound {
        /// Resource plural.
        plural: String,
        /// Object name.
        name: String,
    },
    /// A URL that names no served resource (`/openapi/v2`, unknown groups).
    #[error("the server could not find the requested resource")]
    UnknownPath,
    /// A create for a name that is taken.
    #[error("{plural} \"{name}\" already exists")]
    AlreadyExists {
        /// Resource plural.
        plural: String,
        /// Object name.
        name: String,
    },
    /// An update carrying a stale `metadata.resourceVersion`.
    #[error(
        "operation cannot be fulfilled on {plural} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict {
        /// Resource plural.
        plural: String,
        /// Object name.
        name: String,
    },
    /// A malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// A well-formed request for an invalid object.
    #[error("{0}")]
    Invalid(String),
    /// A requested resource version is no longer in the history.
    #[error("too old resource version: {requested} ({oldest})")]
    Expired {
        /// The version asked for.
        requested: u64,
        /// The oldest version still available.
        oldest: u64,
    },
    /// An unsupported content type (server-side apply).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A verb the path does not support.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// The server failed (what a fault injected with [`crate::Fault::ServerError`] answers).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// Shorthand for [`ApiError::NotFound`].
    pub(crate) fn not_found(plural: &str, name: &str) -> Self {
        Self::NotFound {
            plural: plural.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The HTTP status code.
    #[must_use]
    pub fn code(&self) -> u16 {
        match self {
            Self::NotFound { .. } | Self::UnknownPath => 404,
            Self::AlreadyExists { .. } | Self::Conflict { .. } => 409,
            Self::BadRequest(_) => 400,
            Self::Invalid(_) => 422,
            Self::Expired { .. } => 410,
            Self::UnsupportedMediaType(_) => 415,
            Self::MethodNotAllowed => 405,
            Self::Internal(_) => 500,
        }
    }

    /// The machine-readable `Status.reason`.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound { .. } | Self::UnknownPath => "NotFound",
            Self::AlreadyExists { .. } => "AlreadyExists",
            Self::Conflict { .. } => "Conflict",
            Self::BadRequest(_) => "BadRequest",
            Self::Invalid(_) => "Invalid",
            Self::Expired { .. } => "Expired",
            Self::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::Internal(_) => "InternalError",
        }
    }

    /// The error as a `Status` object.
    #[must_use]
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        if let Self::NotFound { plural, name }
        | Self::AlreadyExists { plural, name }
        | Self::Conflict { plural, name } = self
        {
            status["details"] = json!({ "name": name, "kind": plural });
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        crate::router::json_response(code, &self.to_status())
    }
}
