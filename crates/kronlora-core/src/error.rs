//! One error type for the whole core. Each variant has a stable `code` that the bindings put on
//! the JavaScript `Error`, so callers can branch on it; the message says what to change.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option is unknown, missing, of the wrong type or out of range.
    #[error("{0}")]
    InvalidOption(String),
    /// An array has the wrong length, or a tensor the wrong shape.
    #[error("{0}")]
    ShapeMismatch(String),
    /// A dimension cannot be split into the requested Kronecker factors.
    #[error("{0}")]
    Factorization(String),
    /// NaN or infinity where finite numbers are required.
    #[error("{0}")]
    NonFinite(String),
    /// The call does not fit the object's current state (e.g. merging twice).
    #[error("{0}")]
    InvalidState(String),
    /// The operation does not exist for this kind of object.
    #[error("{0}")]
    Unsupported(String),
    /// A dataset record is malformed, or a dataset is empty.
    #[error("{0}")]
    InvalidData(String),
    /// A model file or directory is missing, truncated, or disagrees with its config.
    #[error("{0}")]
    InvalidModel(String),
    /// Reading or writing a file failed (permissions, a full disk, a missing directory).
    #[error("{0}")]
    Io(String),
    /// A failure inside candle; this indicates a bug in kronlora, not bad input.
    #[error("internal tensor error (please report this as a kronlora bug): {0}")]
    Internal(#[from] candle_core::Error),
}

impl Error {
    /// Stable machine-readable code, mirrored on the JavaScript `Error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidOption(_) => "ERR_INVALID_OPTION",
            Error::ShapeMismatch(_) => "ERR_SHAPE_MISMATCH",
            Error::Factorization(_) => "ERR_FACTORIZATION",
            Error::NonFinite(_) => "ERR_NON_FINITE",
            Error::InvalidState(_) => "ERR_INVALID_STATE",
            Error::Unsupported(_) => "ERR_UNSUPPORTED",
            Error::InvalidModel(_) => "ERR_INVALID_MODEL",
            Error::InvalidData(_) => "ERR_INVALID_DATA",
            Error::Io(_) => "ERR_IO",
            Error::Internal(_) => "ERR_INTERNAL",
        }
    }
}
