//! One association: negotiation, then C-ECHO and C-STORE requests one at a time
//! (asynchronous operations are not negotiated) until the sender releases.

use std::net::SocketAddr;
use std::sync::Arc;

use dicom_ul::association::{Association as _, AsyncServerAssociation};
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::Pdu;
use tokio::net::TcpStream;

use super::command::{self, Command, C_ECHO_RQ, C_ECHO_RSP, C_STORE_RQ, C_STORE_RSP};
use super::Listener;
use crate::ingest::{Accepted, IngestError};
use crate::spool::{SpoolError, SpoolFile, UploadPermit};

/// Data PDV bytes are gathered up to this before each write to the spool file.
const WRITE_CHUNK: usize = 1 << 20;

/// Status of a C-STORE (PS3.4 Annex B.2.3, PS3.7 Annex C).
const SUCCESS: u16 = 0x0000;
/// Stored with a warning (tomosynthesis: not triaged), as STOW-RS reports it.
const WARNING: u16 = crate::dicom::WARNING_STORED_NOT_TRIAGED;
const OUT_OF_RESOURCES: u16 = 0xA700;
const PROCESSING_FAILURE: u16 = 0x0110;
const CANNOT_UNDERSTAND: u16 = 0xC000;

/// Serves one accepted connection to its end; every outcome is logged, none fails
/// the listener. Negotiation (and the TLS handshake) must end within the idle
/// timeout.
pub(super) async fn run(shared: &Listener, socket: TcpStream, peer: SocketAddr) {
    let limit = std::time::Duration::from_secs(shared.config.dicom.idle_timeout_secs);
    let established = if shared.tls {
        match tokio::time::timeout(limit, shared.options.establish_tls_async(socket)).await {
            Ok(Ok(a)) => serve(shared, a, peer).await,
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("negotiation timed out".into()),
        }
    } else {
        match tokio::time::timeout(limit, shared.options.establish_async(socket)).await {
            Ok(Ok(a)) => serve(shared, a, peer).await,
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("negotiation timed out".into()),
        }
    };
    if let Err(e) = established {
        tracing::warn!(%peer, error = %e, "DICOM association not established");
    }
}

async fn serve<S>(
    shared: &Listener,
    mut assoc: AsyncServerAssociation<S>,
    peer: SocketAddr,
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let calling = assoc.peer_ae_title().trim().to_owned();
    let Some(center) = shared.center_of(&calling) else {
        // check_access accepted it, so the configuration is the same: unreachable in
        // practice, refused all the same.
        let _ = assoc.abort().await;
        return Ok(());
    };
    tracing::info!(%peer, calling = %calling, %center, tls = shared.tls, "DICOM association");
    let mut session = Session {
        shared,
        center,
        command: Vec::new(),
        incoming: None,
        stored: 0,
        refused: 0,
    };
    let end = session.serve(&mut assoc).await;
    match end {
        End::Released => {
            let _ = assoc.send(&Pdu::ReleaseRP).await;
        }
        End::Aborted => {}
        End::Abort(reason) => {
            tracing::warn!(%peer, calling = %calling, %reason, "DICOM association aborted");
            let _ = assoc.abort().await;
            return Ok(());
        }
    }
    tracing::info!(%peer, calling = %calling, stored = session.stored, refused = session.refused, "DICOM association ended");
    Ok(())
}

enum End {
    /// The sender asked to release: answer it.
    Released,
    /// The sender aborted, or the connection went away.
    Aborted,
    /// A protocol error or an idle association: abort it.
    Abort(String),
}

/// The state of one association between PDUs.
struct Session<'a> {
    shared: &'a Listener,
    center: String,
    /// Command PDV bytes of the request being received.
    command: Vec<u8>,
    /// The C-STORE whose data set is being received.
    incoming: Option<Incoming>,
    stored: u64,
    refused: u64,
}

/// One instance being received.
struct Incoming {
    request: Command,
    context_id: u8,
    /// Where the Part 10 file is written; `None` once refused.
    file: Option<SpoolFile>,
    /// Data gathered for the next write.
    pending: Vec<u8>,
    permit: Option<UploadPermit>,
    /// Set when the instance is refused before it is complete: the rest of its data
    /// is read and discarded, then this is the answer.
    refusal: Option<(u16, String)>,
    received: u64,
}

impl Session<'_> {
    async fn serve<S>(&mut self, assoc: &mut AsyncServerAssociation<S>) -> End
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    {
        loop {
            let pdu = match assoc.receive().await {
                Ok(p) => p,
                Err(e) => {
                    let text = e.to_string();
                    // A sender that closes without releasing is common (and harmless
                    // between instances); an idle timeout is ours to end.
                    return if text.contains("timed out") || text.contains("Timeout") {
                        End::Abort(format!(
                            "idle for {} s",
                            self.shared.config.dicom.idle_timeout_secs
                        ))
                    } else {
                        tracing::debug!(error = %text, "DICOM connection ended");
                        End::Aborted
                    };
                }
            };
            match pdu {
                Pdu::PData { data } => {
                    for pdv in data {
                        if let Err(reason) = self.on_pdv(assoc, pdv).await {
                            return End::Abort(reason);
                        }
                    }
                }
                Pdu::ReleaseRQ => {
                    if self.incoming.is_some() {
                        tracing::warn!("association released in the middle of an instance; the instance was not stored");
                    }
                    return End::Released;
                }
                Pdu::AbortRQ { .. } => return End::Aborted,
                other => return End::Abort(format!("unexpected PDU {}", pdu_name(&other))),
            }
        }
    }

    async fn on_pdv<S>(
        &mut self,
        assoc: &mut AsyncServerAssociation<S>,
        pdv: PDataValue,
    ) -> Result<(), String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    {
        match pdv.value_type {
            PDataValueType::Command => {
                if self.incoming.is_some() {
                    return Err(
                        "a command arrived before the data set of the previous one ended".into(),
                    );
                }
                if self.command.len() + pdv.data.len() > command::MAX_COMMAND_BYTES {
                    return Err(format!(
                        "command set over {} bytes",
                        command::MAX_COMMAND_BYTES
                    ));
                }
                self.command.extend_from_slice(&pdv.data);
                if pdv.is_last {
                    let bytes = std::mem::take(&mut self.command);
                    let request = command::parse(&bytes).map_err(|e| e.to_string())?;
                    self.on_command(assoc, pdv.presentation_context_id, request)
                        .await?;
                }
                Ok(())
            }
            PDataValueType::Data => {
                let Some(incoming) = self.incoming.as_mut() else {
                    return Err("a data set arrived without a C-STORE request".into());
                };
                if incoming.context_id != pdv.presentation_context_id {
                    return Err("a data set arrived on another presentation context".into());
                }
                incoming
                    .take(&pdv.data, self.shared.config.limits.max_instance_bytes)
                    .await;
                if pdv.is_last {
                    if let Some(incoming) = self.incoming.take() {
                        let context_id = incoming.context_id;
                        let request = incoming.request.clone();
                        let (status, comment) = self.finish(incoming).await;
                        let rsp =
                            command::response(&request, C_STORE_RSP, status, comment.as_deref());
                        send_command(assoc, context_id, &rsp).await?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Ingests a complete instance; the C-STORE status and, unless it succeeded
    /// plainly, the Error Comment (a refusal's reason or a warning's text).
    async fn finish(&mut self, mut incoming: Incoming) -> (u16, Option<String>) {
        let outcome = match incoming.close().await {
            Some((file, permit)) => {
                let file = Arc::new(file);
                let hold = (permit, file.clone());
                let r = self
                    .shared
                    .ingest
                    .ingest_file(file.path(), None, Some(&self.center), hold)
                    .await;
                match r {
                    Ok((meta, Accepted::Stored | Accepted::AlreadyStored)) => Ok(meta.warning),
                    Err(e) => Err(refusal_of(&e)),
                }
            }
            None => Err(incoming
                .refusal
                .take()
                .unwrap_or((PROCESSING_FAILURE, "the instance was not received".into()))),
        };
        match outcome {
            Ok(warning) => {
                self.stored += 1;
                crate::metrics::metrics().count_dimse("stored");
                match warning {
                    Some(w) => (WARNING, Some(w)),
                    None => (SUCCESS, None),
                }
            }
            Err((status, reason)) => {
                self.refused += 1;
                crate::metrics::metrics().count_dimse("refused");
                tracing::warn!(
                    status = format_args!("{status:04X}"),
                    %reason,
                    sop = %incoming.request.affected_sop_instance_uid,
                    "C-STORE refused"
                );
                (status, Some(reason))
            }
        }
    }

    async fn on_command<S>(
        &mut self,
        assoc: &mut AsyncServerAssociation<S>,
        context_id: u8,
        request: Command,
    ) -> Result<(), String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    {
        let context = assoc
            .presentation_contexts()
            .iter()
            .find(|pc| pc.id == context_id)
            .cloned()
            .ok_or_else(|| format!("presentation context {context_id} was not accepted"))?;
        match request.field {
            C_ECHO_RQ => {
                send_command(
                    assoc,
                    context_id,
                    &command::response(&request, C_ECHO_RSP, SUCCESS, None),
                )
                .await
            }
            C_STORE_RQ if request.has_data_set => {
                let calling = assoc.peer_ae_title().trim().to_owned();
                let incoming = Incoming::start(
                    self.shared,
                    &context.transfer_syntax,
                    &calling,
                    request,
                    context_id,
                )
                .await;
                self.incoming = Some(incoming);
                Ok(())
            }
            C_STORE_RQ => {
                send_command(
                    assoc,
                    context_id,
                    &command::response(
                        &request,
                        C_STORE_RSP,
                        CANNOT_UNDERSTAND,
                        Some("C-STORE request without a data set"),
                    ),
                )
                .await
            }
            other => Err(format!(
                "command 0x{other:04X} is not served here (C-STORE and C-ECHO are)"
            )),
        }
    }
}

/// The C-STORE status and reason for an instance ingest did not take.
fn refusal_of(e: &IngestError) -> (u16, String) {
    match e.failure_reason() {
        Some(code) => (code, e.to_string()),
        None if e.is_disk_full() => (
            OUT_OF_RESOURCES,
            "the server's disk is full; send again later".into(),
        ),
        None => {
            tracing::error!(error = %e, "C-STORE: server-side failure");
            (
                PROCESSING_FAILURE,
                "temporary server failure (logged); send again later".into(),
            )
        }
    }
}

fn spool_refusal(e: SpoolError) -> (u16, String) {
    match e {
        SpoolError::Busy(m) => (OUT_OF_RESOURCES, format!("server busy: {m}")),
        SpoolError::DiskFull(_) => (
            OUT_OF_RESOURCES,
            "the server's disk is full; send again later".into(),
        ),
        SpoolError::Io(e) => {
            tracing::error!(error = %e, "C-STORE: spool failure");
            (
                PROCESSING_FAILURE,
                "temporary server failure (logged); send again later".into(),
            )
        }
    }
}

impl Incoming {
    /// Admits the instance and opens its spool file with the Part 10 header; a
    /// refusal here still reads the data set (and discards it) before answering.
    async fn start(
        shared: &Listener,
        transfer_syntax: &str,
        calling_ae_title: &str,
        request: Command,
        context_id: u8,
    ) -> Incoming {
        let header = part10_header(&request, transfer_syntax, calling_ae_title);
        let mut incoming = Incoming {
            request,
            context_id,
            file: None,
            pending: header,
            permit: None,
            refusal: None,
            received: 0,
        };
        let spool = &shared.ingest.spool;
        match spool.admit() {
            Ok(p) => incoming.permit = Some(p),
            Err(e) => {
                incoming.refuse(spool_refusal(e));
                return incoming;
            }
        }
        match spool.create().await {
            Ok(f) => incoming.file = Some(f),
            Err(e) => incoming.refuse(spool_refusal(e)),
        }
        incoming
    }

    fn refuse(&mut self, refusal: (u16, String)) {
        if self.refusal.is_none() {
            self.refusal = Some(refusal);
        }
        self.file = None;
        self.permit = None;
        self.pending = Vec::new();
    }

    /// Appends data set bytes, within the instance limit.
    async fn take(&mut self, data: &[u8], max_instance_bytes: u64) {
        if self.refusal.is_some() {
            return;
        }
        self.received += data.len() as u64;
        if self.received > max_instance_bytes {
            self.refuse((
                OUT_OF_RESOURCES,
                format!(
                    "instance over the limit of {max_instance_bytes} bytes (max_instance_bytes)"
                ),
            ));
            return;
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() >= WRITE_CHUNK {
            self.flush().await;
        }
    }

    async fn flush(&mut self) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if let Err(e) = file.write(&self.pending).await {
            self.refuse(spool_refusal(e));
            return;
        }
        self.pending.clear();
    }

    /// The complete spool file and the upload permit; `None` if refused.
    async fn close(&mut self) -> Option<(SpoolFile, UploadPermit)> {
        self.flush().await;
        let mut file = self.file.take()?;
        if let Err(e) = file.finish().await {
            self.refuse(spool_refusal(e));
            return None;
        }
        Some((file, self.permit.take()?))
    }
}

/// Preamble, `DICM` and the file meta group (Explicit VR Little Endian) of the
/// instance a C-STORE request announces, in the transfer syntax negotiated for its
/// presentation context.
fn part10_header(request: &Command, transfer_syntax: &str, calling_ae_title: &str) -> Vec<u8> {
    fn element(out: &mut Vec<u8>, element: u16, vr: &[u8; 2], value: &[u8], pad: u8) {
        let len = value.len() + value.len() % 2;
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&element.to_le_bytes());
        out.extend_from_slice(vr);
        if vr == b"OB" {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(len as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(len as u16).to_le_bytes());
        }
        out.extend_from_slice(value);
        if value.len() % 2 == 1 {
            out.push(pad);
        }
    }
    let ts = transfer_syntax.trim_end_matches(['\0', ' ']);
    let mut group = Vec::with_capacity(256);
    element(&mut group, 0x0001, b"OB", &[0, 1], 0);
    element(
        &mut group,
        0x0002,
        b"UI",
        request.affected_sop_class_uid.as_bytes(),
        0,
    );
    element(
        &mut group,
        0x0003,
        b"UI",
        request.affected_sop_instance_uid.as_bytes(),
        0,
    );
    element(&mut group, 0x0010, b"UI", ts.as_bytes(), 0);
    element(
        &mut group,
        0x0012,
        b"UI",
        super::IMPLEMENTATION_CLASS_UID.as_bytes(),
        0,
    );
    element(
        &mut group,
        0x0013,
        b"SH",
        super::IMPLEMENTATION_VERSION_NAME.as_bytes(),
        b' ',
    );
    element(&mut group, 0x0016, b"AE", calling_ae_title.as_bytes(), b' ');
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    element(
        &mut out,
        0x0000,
        b"UL",
        &(group.len() as u32).to_le_bytes(),
        0,
    );
    out.extend_from_slice(&group);
    out
}

async fn send_command<S>(
    assoc: &mut AsyncServerAssociation<S>,
    context_id: u8,
    bytes: &[u8],
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    assoc
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: context_id,
                value_type: PDataValueType::Command,
                is_last: true,
                data: bytes.to_vec(),
            }],
        })
        .await
        .map_err(|e| format!("sending a response: {e}"))
}

fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::Unknown { .. } => "of an unknown type",
        _ => "out of place",
    }
}
