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
    /// Writing would replace or delete files or directories that kronlora did not write; the
    /// call was refused before anything was touched.
    #[error("{0}")]
    WouldOverwrite(String),
    /// A failure inside candle. Loaders and option parsers check their input first, so this
    /// indicates a bug in kronlora, not bad input.
    #[error("internal tensor error (please report this as a kronlora bug): {}", first_line(&.0.to_string()))]
    Internal(#[from] candle_core::Error),
}

/// candle appends a multi-line backtrace to its errors when `RUST_BACKTRACE` is set; messages
/// that reach JavaScript stay one line whatever the environment.
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

impl Error {
    /// `[CODE] message` on one line: what both bindings throw, and the TS package parses.
    /// Line breaks inside a message (a quoted file name, a backtrace) become spaces.
    /// A candle error quoted inside a message (`{e}`) brings its backtrace along when
    /// `RUST_BACKTRACE` is set; the frames (`0: candle_core::…`) are cut off here.
    pub fn to_js_message(&self) -> String {
        let text = self.to_string();
        let one_line: Vec<&str> = text
            .lines()
            .map(str::trim)
            .take_while(|l| !l.starts_with("0: ") && !l.starts_with("stack backtrace:"))
            .filter(|l| !l.is_empty())
            .collect();
        format!("[{}] {}", self.code(), one_line.join(" "))
    }

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
            Error::WouldOverwrite(_) => "ERR_WOULD_OVERWRITE",
            Error::Internal(_) => "ERR_INTERNAL",
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn messages_for_javascript_are_one_line_even_with_a_backtrace() {
        let candle = candle_core::Error::WithBacktrace {
            inner: Box::new(candle_core::Error::Msg("shape mismatch".into())),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert!(candle.to_string().lines().count() > 1, "the backtrace is printed by candle");
        let message = Error::from(candle).to_js_message();
        assert_eq!(
            message,
            "[ERR_INTERNAL] internal tensor error (please report this as a kronlora bug): shape mismatch"
        );
        assert_eq!(
            Error::Io("a.txt: cannot read:\n  denied\n".into()).to_js_message(),
            "[ERR_IO] a.txt: cannot read: denied"
        );
        let quoted = candle_core::Error::WithBacktrace {
            inner: Box::new(candle_core::Error::Msg("unrecognized value-type 99".into())),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        let message = Error::InvalidModel(format!("m.gguf: not a valid GGUF file: {quoted}")).to_js_message();
        assert_eq!(message, "[ERR_INVALID_MODEL] m.gguf: not a valid GGUF file: unrecognized value-type 99");
    }
}
