//! Back to the start for the next loop. Kept on its own because sources that cannot seek
//! (servers without Range, live streams, generated graphs) loop by opening again, and a
//! server that stops honouring Range mid-life is switched to that for good.

use ffmpeg_next as ffmpeg;

use super::error::{FailureCode, StreamFailure};
use super::io;
use super::session_open::Session;

impl Session {
    /// Back to the start of the source for the next pass: a seek where the source can seek,
    /// else the source is opened again (HTTP without Range, live streams, generated graphs).
    pub(super) fn rewind(&mut self) -> Result<(), StreamFailure> {
        self.pass_frames = 0;
        if self.seekable {
            self.guard().arm(io::READ_DEADLINE);
            let sought = self.input.seek(self.start_us, ..self.start_us.max(0) + 1);
            self.guard().disarm();
            match sought {
                Ok(()) => return Ok(()),
                // A server that stopped honouring Range: open again, as for a stream.
                Err(_) => self.seekable = false,
            }
        }
        let (input, pattern_io) = unsafe { io::input_open(&self.source, self.kind, self.guard()) }
            .map_err(|e| {
                StreamFailure::new(
                    FailureCode::Open,
                    format!("{}: cannot open again to loop: {e}", self.source),
                )
            })?;
        let same = input
            .stream(self.stream)
            .is_some_and(|s| s.parameters().medium() == ffmpeg::media::Type::Video);
        if !same {
            return Err(StreamFailure::new(
                FailureCode::Open,
                format!(
                    "{}: opened again, stream {} is no longer video",
                    self.source, self.stream
                ),
            ));
        }
        // The old input goes first, then the I/O context it read from.
        self.input = input;
        self.pattern_io = pattern_io;
        Ok(())
    }
}
