//! The curated public API: the types a user names are at the crate root, once. (Before, `wire`
//! exposed ~127 items, `CloseReason` lived in `wire::session` and `reactor::options`,
//! `FrameError` and `DEFAULT_MAX_MESSAGE_SIZE` only in `wire::frame`; none of the uses below
//! compiled.) That the old paths are gone is checked by the `compile_fail` doctests of
//! `ApiSurfaceDoctests` in src/lib.rs.

use std::time::Duration;

use mpconn::reactor::options::{ConnectionOptions, ListenOptions};
use mpconn::{
    AuthOptions, AuthenticationError, CloseReason, DEFAULT_MAX_MESSAGE_SIZE, Dialect, Digest, DigestPolicy, Error,
    FrameError,
};

/// A close reason converts to the error the blocking face reports, matched through root paths.
#[test]
fn close_reasons_and_frame_errors_are_named_from_the_root() {
    let e: Error = CloseReason::Protocol(FrameError::TooLarge { len: 10, limit: 5 }).into();
    assert!(matches!(e, Error::Protocol(FrameError::TooLarge { len: 10, limit: 5 })));
    let e: Error = CloseReason::AuthenticationFailed(AuthenticationError::KeyRequired).into();
    assert!(matches!(e, Error::Authentication(AuthenticationError::KeyRequired)));
    assert!(CloseReason::PeerClosed.is_clean());
}

/// Every setting a user makes is reachable from the root and `reactor::options`.
#[test]
fn settings_types_are_named_from_the_root() {
    let auth = AuthOptions::new()
        .authkey("k")
        .dialect(Dialect::Processing)
        .digest_policy(DigestPolicy::RequireSha256)
        .handshake_timeout(Some(Duration::from_secs(1)));
    let options = ListenOptions::new().auth(auth).max_message_size(DEFAULT_MAX_MESSAGE_SIZE / 2);
    assert_eq!(options.connection_options().auth_options().dialect, Dialect::Processing);
    assert_eq!(options.connection_options().max_message_size, DEFAULT_MAX_MESSAGE_SIZE / 2);
    assert!(ConnectionOptions::new().auth_options().authkey.is_none());
    assert!(Digest::ALL.contains(&Digest::Sha256));
}
