//! The label values of the counters: every label is an enum declared once with its text, and
//! the counters are indexed by it.

use wsgate_core::Error;
use wsgate_core::close::CloseCode;
use wsgate_core::frame::OpCode;

/// Declares an enum of metric label values (or counters), each with its text, and the tables
/// the counters are indexed by.
macro_rules! labels {
    ($(#[$m:meta])* enum $name:ident { $($(#[$vm:meta])* $v:ident => $text:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum $name { $($(#[$vm])* $v,)* }

        impl $name {
            /// Every value, in counter order.
            pub(crate) const ALL: &'static [$name] = &[$($name::$v,)*];
            /// How many values there are.
            pub(crate) const COUNT: usize = $name::ALL.len();

            /// The label's text (or the counter's metric name).
            pub(crate) fn text(self) -> &'static str {
                match self { $($name::$v => $text,)* }
            }
        }
    };
}

labels! {
    /// A plain counter of a worker, by its metric name.
    enum Counter {
        /// Connections accepted.
        ConnectionsTotal => "wsgate_connections_total",
        /// WebSocket sessions opened.
        UpgradesTotal => "wsgate_upgrades_total",
        /// Bytes written to sockets.
        BytesOut => "wsgate_bytes_out_total",
        /// Publishes accepted (WebSocket and HTTP).
        Publishes => "wsgate_publishes_total",
        /// Subscribers closed with 1013 for falling behind.
        SlowConsumerCloses => "wsgate_slow_consumer_closes_total",
        /// Control messages answered with an error.
        MessageErrors => "wsgate_message_errors_total",
        /// Plain HTTP requests answered (not upgrades).
        HttpRequests => "wsgate_http_requests_total",
        /// Publishes refused for going over the connection's rate.
        RateLimited => "wsgate_rate_limited_total",
        /// Subscribes and publishes refused by the connection's token.
        Forbidden => "wsgate_forbidden_total",
        /// Connections closed because handling them hit a bug (a caught panic).
        InternalErrors => "wsgate_internal_errors_total",
        /// Publishing connections no longer read until the inboxes they publish to have room.
        PublishersPaused => "wsgate_publishers_paused_total",
        /// Connections no longer read until their outbox is down to half its limit.
        ReadersPaused => "wsgate_readers_paused_total",
        /// Subscribe acknowledgements sent at once because the worker held the most it holds.
        AcksNotHeld => "wsgate_acks_not_held_total",
        /// Gap notices sent to subscribers after an outage of the link to other nodes.
        GapNotices => "wsgate_gap_notices_total",
        /// Subscribes that recovered what they missed.
        Recoveries => "wsgate_recoveries_total",
        /// Subscribes that asked to recover and could not (another epoch, too old, ahead).
        RecoveriesFailed => "wsgate_recoveries_failed_total",
        /// Sessions that negotiated permessage-deflate.
        DeflateSessions => "wsgate_deflate_sessions_total",
        /// Outgoing messages deflated (a publish once, whatever its subscribers).
        Compressions => "wsgate_compressions_total",
        /// Payload bytes of the messages sent to deflate sessions, before compression.
        DeflateBytesIn => "wsgate_deflate_payload_bytes_before_total",
        /// The same messages' payload bytes as sent (compressed, or plain when that was smaller).
        DeflateBytesOut => "wsgate_deflate_payload_bytes_after_total",
    }
}

impl Counter {
    /// The counter's HELP line in the exposition.
    pub(super) fn help(self) -> &'static str {
        match self {
            Counter::ConnectionsTotal => "Connections accepted.",
            Counter::UpgradesTotal => "WebSocket sessions opened.",
            Counter::BytesOut => "Bytes written to clients.",
            Counter::Publishes => "Publishes accepted.",
            Counter::SlowConsumerCloses => "Subscribers closed for falling behind.",
            Counter::MessageErrors => "Control messages answered with an error.",
            Counter::HttpRequests => "Plain HTTP requests answered.",
            Counter::RateLimited => "Publishes refused for going over the rate.",
            Counter::Forbidden => "Subscribes and publishes the token did not allow.",
            Counter::InternalErrors => {
                "Connections closed with 1011 after a bug while handling them."
            }
            Counter::PublishersPaused => {
                "Publishers no longer read until the inboxes they publish to had room."
            }
            Counter::ReadersPaused => {
                "Connections no longer read until their outbox was down to half its limit."
            }
            Counter::AcksNotHeld => {
                "Subscribe acknowledgements sent without waiting for the cluster: too many held."
            }
            Counter::DeflateSessions => "Sessions that negotiated permessage-deflate.",
            Counter::Recoveries => "Subscribes on a history topic that recovered what they missed.",
            Counter::GapNotices => {
                "Gap notices sent to subscribers after the link to other nodes came back."
            }
            Counter::RecoveriesFailed => {
                "Subscribes that asked to recover and could not (epoch, too old, ahead)."
            }
            Counter::Compressions => {
                "Outgoing messages deflated: a publish once, whatever its subscribers."
            }
            Counter::DeflateBytesIn => {
                "Payload bytes sent to permessage-deflate sessions, before compression."
            }
            Counter::DeflateBytesOut => {
                "Payload bytes sent to permessage-deflate sessions, as sent (after compression)."
            }
        }
    }
}

labels! {
    /// Why a request or a connection was refused: the `reason` label of
    /// `wsgate_handshake_failures_total`.
    enum Failure {
        /// Not a valid HTTP/1.x request.
        HttpMalformed => "http_malformed",
        /// The request head passed `max-head-size`.
        HeadersTooLarge => "headers_too_large",
        /// More header fields than the parser takes.
        TooManyHeaders => "too_many_headers",
        /// A method the endpoint does not serve.
        MethodNotAllowed => "method_not_allowed",
        /// An upgrade over HTTP/1.0.
        HttpVersion => "http_version",
        /// No `Host` header.
        MissingHost => "missing_host",
        /// `Upgrade` does not name websocket.
        NotWebSocketUpgrade => "not_websocket_upgrade",
        /// `Connection` does not list `Upgrade`.
        MissingConnectionUpgrade => "missing_connection_upgrade",
        /// A bad `Sec-WebSocket-Key`.
        BadWebSocketKey => "bad_websocket_key",
        /// `Sec-WebSocket-Version` is not 13.
        UnsupportedVersion => "unsupported_version",
        /// A hixie-76 handshake.
        Hixie76 => "hixie76",
        /// A body over `max-body-size`.
        BodyTooLarge => "body_too_large",
        /// A chunked body (only `Content-Length` is read).
        LengthRequired => "length_required",
        /// A header that does not parse.
        BadHeader => "bad_header",
        /// No such endpoint.
        NotFound => "not_found",
        /// An upgrade while the node drains.
        Draining => "draining",
        /// The request was not complete within the handshake timeout.
        Timeout => "timeout",
        /// A missing or bad token or API key.
        Unauthorized => "unauthorized",
        /// A request the endpoint cannot act on (a bad topic, a bad body).
        BadRequest => "bad_request",
        /// The node holds `max-connections`.
        TooManyConnections => "too_many_connections",
        /// The client's address holds `max-connections-per-ip`.
        TooManyFromAddress => "too_many_from_address",
        /// An `Origin` not in `allowed-origins`.
        Origin => "origin",
        /// The token does not allow a topic of the upgrade.
        Forbidden => "forbidden",
        /// A bad or untrusted PROXY header.
        BadProxyHeader => "bad_proxy_header",
        /// A `POST /publish` while the inboxes it publishes to are full (503).
        InboxFull => "inbox_full",
        /// A TLS connection over `tls-handshakes-per-ip` (closed at once).
        TlsRate => "tls_rate",
        /// A `POST /publish` to a topic whose history Redis keeps, while Redis is out of reach
        /// (503).
        Unavailable => "unavailable",
    }
}

impl Failure {
    /// The failure an error found while reading a request counts as. Errors of the WebSocket
    /// framing and of the pub/sub envelope cannot happen before an upgrade; where one comes
    /// from a request (a topic in a path, say), it is a bad request.
    pub(crate) fn of(error: &Error) -> Failure {
        use Error as E;
        match error {
            E::HttpMalformed(_) => Failure::HttpMalformed,
            E::HeadersTooLarge => Failure::HeadersTooLarge,
            E::TooManyHeaders => Failure::TooManyHeaders,
            E::MethodNotAllowed => Failure::MethodNotAllowed,
            E::HttpVersion => Failure::HttpVersion,
            E::MissingHost => Failure::MissingHost,
            E::NotWebSocketUpgrade => Failure::NotWebSocketUpgrade,
            E::MissingConnectionUpgrade => Failure::MissingConnectionUpgrade,
            E::BadWebSocketKey => Failure::BadWebSocketKey,
            E::UnsupportedVersion => Failure::UnsupportedVersion,
            E::Hixie76 => Failure::Hixie76,
            E::BodyTooLarge => Failure::BodyTooLarge,
            E::LengthRequired => Failure::LengthRequired,
            E::BadHeader(_) => Failure::BadHeader,
            E::BadProxyHeader(_) => Failure::BadProxyHeader,
            E::Forbidden(_) => Failure::Forbidden,
            E::ReservedBits
            | E::UnknownOpcode(_)
            | E::FragmentedControl
            | E::ControlTooLong
            | E::UnmaskedClientFrame
            | E::MaskedServerFrame
            | E::LengthOverflow
            | E::UnexpectedContinuation
            | E::ExpectedContinuation
            | E::FrameTooBig
            | E::MessageTooBig
            | E::InvalidUtf8
            | E::BadCompressedData
            | E::CloseTooShort
            | E::InvalidCloseCode(_)
            | E::InvalidJson(_)
            | E::InvalidMessage(_)
            | E::UnknownType
            | E::MissingField(_)
            | E::InvalidId
            | E::InvalidTopic(_)
            | E::InvalidBinary(_)
            | E::InvalidRecover(_)
            | E::RateLimited
            | E::TooManyTopics(_) => Failure::BadRequest,
            E::Unavailable(_) => Failure::Unavailable,
        }
    }
}

labels! {
    /// Kinds of messages: the `kind` label of the message counters.
    enum MessageKind {
        /// Text data messages.
        Text => "text",
        /// Binary data messages.
        Binary => "binary",
        /// Pings, pongs and closes.
        Control => "control",
    }
}

impl MessageKind {
    /// The kind of a frame with `opcode`.
    pub(crate) fn of(opcode: OpCode) -> MessageKind {
        match opcode {
            OpCode::Text => MessageKind::Text,
            OpCode::Binary | OpCode::Continuation => MessageKind::Binary,
            OpCode::Close | OpCode::Ping | OpCode::Pong => MessageKind::Control,
        }
    }
}

labels! {
    /// A close frame's code as counted: the RFC's codes one by one, the registered
    /// (3000-3999) and private (4000-4999) ranges together, `none` for a close without a code.
    /// The `code` label of `wsgate_closes_sent_total` and `wsgate_closes_received_total`.
    enum CloseLabel {
        /// 1000.
        Normal => "1000",
        /// 1001.
        GoingAway => "1001",
        /// 1002.
        ProtocolError => "1002",
        /// 1003.
        UnsupportedData => "1003",
        /// 1007.
        InvalidPayload => "1007",
        /// 1008.
        Policy => "1008",
        /// 1009.
        TooBig => "1009",
        /// 1010.
        MandatoryExtension => "1010",
        /// 1011.
        InternalError => "1011",
        /// 1012.
        ServiceRestart => "1012",
        /// 1013.
        TryAgainLater => "1013",
        /// 1014.
        BadGateway => "1014",
        /// 3000-3999.
        Registered => "3xxx",
        /// 4000-4999.
        Private => "4xxx",
        /// A close frame without a code.
        NoCode => "none",
    }
}

impl CloseLabel {
    /// The label of a close frame with `code`; `None` for a code no close frame may carry
    /// (the decoder refuses those before they are counted).
    pub(crate) fn of(code: Option<CloseCode>) -> Option<CloseLabel> {
        Some(match code.map(|c| c.0) {
            None => CloseLabel::NoCode,
            Some(1000) => CloseLabel::Normal,
            Some(1001) => CloseLabel::GoingAway,
            Some(1002) => CloseLabel::ProtocolError,
            Some(1003) => CloseLabel::UnsupportedData,
            Some(1007) => CloseLabel::InvalidPayload,
            Some(1008) => CloseLabel::Policy,
            Some(1009) => CloseLabel::TooBig,
            Some(1010) => CloseLabel::MandatoryExtension,
            Some(1011) => CloseLabel::InternalError,
            Some(1012) => CloseLabel::ServiceRestart,
            Some(1013) => CloseLabel::TryAgainLater,
            Some(1014) => CloseLabel::BadGateway,
            Some(3000..=3999) => CloseLabel::Registered,
            Some(4000..=4999) => CloseLabel::Private,
            Some(_) => return None,
        })
    }
}
