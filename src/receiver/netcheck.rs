//! Network checks (HELLO NETCHECK): a PONG for each PING, in a session's place.

use blockrep_proto::ReceiverEvent;

use super::connection::{read_error, sender_error, Conn};
use super::{SessionReport, Shared};
use crate::Error;

/// A network check (HELLO NETCHECK): WELCOME, then a PONG for each PING until END. Takes a
/// session's place (so `max_sessions` bounds checks too) and its idle timeout; opens nothing.
pub(super) async fn serve_netcheck(
    conn: &mut Conn,
    shared: &Shared,
) -> Result<SessionReport, Error> {
    let peer = conn.peer();
    let Ok(_session_permit) = shared.sessions.clone().try_acquire_owned() else {
        return Err(Error::Busy {
            sessions: shared.config.max_sessions,
        });
    };
    let _active = shared.config.metrics.session_active();
    let welcome = conn.session.accept(crate::VERSION, Vec::new());
    conn.send(&welcome, "WELCOME").await?;
    let idle = shared.config.idle_timeout;
    loop {
        let frame = tokio::select! {
            _ = conn.stop.changed() => {
                return Err(Error::Transport("the receiver is shutting down".into()));
            }
            r = tokio::time::timeout(idle, conn.reader.read_frame()) => match r {
                Err(_) => {
                    return Err(Error::Transport(format!(
                        "no frame from {peer} for {} s; closing",
                        idle.as_secs()
                    )))
                }
                Ok(Ok(Some(frame))) => frame,
                Ok(Ok(None)) => {
                    return Err(Error::Transport(format!(
                        "{peer} closed the connection during the network check"
                    )))
                }
                Ok(Err(e)) => return Err(read_error(e, peer)),
            },
        };
        match conn.session.handle_frame(frame)? {
            ReceiverEvent::Ping(ping) => {
                let pong = conn.session.pong(ping);
                conn.send(&pong, "PONG").await?;
            }
            ReceiverEvent::End(end) => {
                return Ok(SessionReport {
                    session_id: conn.session_id.clone(),
                    peer,
                    complete: end.complete,
                    frames: 0,
                    bytes: 0,
                    data_bytes: 0,
                    zero_bytes: 0,
                })
            }
            ReceiverEvent::PeerError(e) => return Err(sender_error(e)),
            other => unreachable!("a network check yields PINGs and END only, not {other:?}"),
        }
    }
}
