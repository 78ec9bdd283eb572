//! Object access without locks: reads, writes and mappings.
//!
//! Every access pins the object in its handle slot (`slot.rs`), which keeps its
//! location, zspage and frames fixed, then works on the bytes: in place where the
//! bytes are contiguous in the arena (inside one frame, or straddling two frames of
//! the chain that happen to be adjacent), through a copy otherwise. No class lock and
//! no epoch guard is taken; the pin is a count, so it may outlive the call (a mapping,
//! a read between `read_begin` and `read_end`).

use std::cell::RefCell;
use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::os::{PAGE_SHIFT, PAGE_SIZE};
use crate::pool::PoolCore;
use crate::slot::{Slot, SlotError};
use crate::zspage::ZsPage;

/// A pinned object: where it is and how large its slot is.
#[derive(Debug)]
pub(crate) struct Pin {
    slot: NonNull<Slot>,
    loc: u64,
    zs: *const ZsPage,
    frame_index: usize,
    /// Bytes a caller may use.
    pub usable: usize,
}

/// Where `len` bytes of a pinned object are.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Span {
    /// Contiguous at this address.
    One(*mut u8),
    /// The first `.1` bytes at `.0`, the rest at `.2`.
    Two(*mut u8, usize, *mut u8),
}

impl Span {
    /// Copies `dst.len()` bytes out.
    ///
    /// # Safety
    /// The span covers at least `dst.len()` bytes of a pinned object.
    pub(crate) unsafe fn copy_out(self, dst: &mut [u8]) {
        let n = dst.len();
        // SAFETY: caller's contract: the source bytes are the object's, pinned, and do
        // not overlap `dst` (a caller's buffer or one of ours).
        unsafe {
            match self {
                Span::One(p) => std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), n),
                Span::Two(a, first, b) => {
                    let first = first.min(n);
                    std::ptr::copy_nonoverlapping(a, dst.as_mut_ptr(), first);
                    std::ptr::copy_nonoverlapping(b, dst.as_mut_ptr().add(first), n - first);
                }
            }
        }
    }

    /// Copies `src` in.
    ///
    /// # Safety
    /// The span covers at least `src.len()` bytes of a pinned object.
    pub(crate) unsafe fn copy_in(self, src: &[u8]) {
        let n = src.len();
        // SAFETY: as in copy_out, in the other direction.
        unsafe {
            match self {
                Span::One(p) => std::ptr::copy_nonoverlapping(src.as_ptr(), p, n),
                Span::Two(a, first, b) => {
                    let first = first.min(n);
                    std::ptr::copy_nonoverlapping(src.as_ptr(), a, first);
                    std::ptr::copy_nonoverlapping(src.as_ptr().add(first), b, n - first);
                }
            }
        }
    }
}

/// How a mapping will be used (the kernel's `zs_mapmode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapMode {
    /// Read and stored back.
    ReadWrite,
    /// Read only: writes through a copied mapping are lost at unmap.
    ReadOnly,
    /// Write only: the bytes need not hold the object's contents; stored at unmap.
    WriteOnly,
}

type PageBuf = Box<[u8; PAGE_SIZE]>;

thread_local! {
    /// Buffers for mappings of objects that are not contiguous, reused per thread.
    static PAGE_BUFS: RefCell<Vec<PageBuf>> = const { RefCell::new(Vec::new()) };
}

fn take_buf() -> PageBuf {
    PAGE_BUFS.try_with(|b| b.borrow_mut().pop()).ok().flatten().unwrap_or_else(|| Box::new([0u8; PAGE_SIZE]))
}

fn give_buf(buf: PageBuf) {
    // Keep a few per thread; the kernel keeps one per CPU.
    let _ = PAGE_BUFS.try_with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < 16 {
            b.push(buf);
        }
    });
}

/// The state of one mapping, between `map_begin` and `map_end`. Small (the C ABI
/// keeps one per open mapping in a per-thread list): what a copied mapping needs to
/// store its bytes back lives in the boxed `copy`, made only on that slow path.
#[derive(Debug)]
pub(crate) struct MapState {
    slot: NonNull<Slot>,
    ptr: *mut u8,
    len: usize,
    mode: MapMode,
    copy: Option<Box<CopyBack>>,
}

/// A copied mapping's buffer and the pin that says where its bytes go back.
#[derive(Debug)]
struct CopyBack {
    buf: PageBuf,
    pin: Pin,
}

impl MapState {
    /// The address handed to the caller.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Bytes the caller may use.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The slot the mapping pins, to drop the pin with [`PoolCore::unpin_slot`] if the
    /// mapping is abandoned before the caller sees it.
    pub(crate) fn slot(&self) -> NonNull<Slot> {
        self.slot
    }
}

impl Pin {
    /// The slot this pin holds, to drop it with [`PoolCore::unpin_slot`].
    pub(crate) fn slot(&self) -> NonNull<Slot> {
        self.slot
    }
}

impl PoolCore {
    /// Pins the object a handle names.
    #[inline]
    pub(crate) fn pin(&self, h: Handle, call: &str) -> Result<Pin> {
        let (slot, idx) = self.resolve(h, call)?;
        let loc = match slot.pin(h.gen()) {
            Ok(loc) => loc,
            Err(SlotError::Stale) => {
                return Err(self.misuse(call, h.to_raw(), Error::Invalid("stale handle (freed?)")))
            }
            Err(_) => return Err(Error::Again),
        };
        let fw = self.frames.side.get((loc >> PAGE_SHIFT) as u32);
        let zs = fw.zspage();
        let usable = if self.dense {
            // SAFETY: `resolve` checked the index; a dense pool's table keeps sizes,
            // and the pin keeps this one fixed (Acquire in `pin` made it visible).
            unsafe { self.handles.size(idx) }
        } else {
            // SAFETY: the pin keeps the object, its zspage and its descriptor alive.
            let class = unsafe { (*zs).class } as usize;
            self.classes[class].spec.usable()
        };
        Ok(Pin { slot: NonNull::from(slot), loc, zs, frame_index: fw.index(), usable })
    }

    /// Drops a pin.
    #[inline]
    pub(crate) fn unpin(&self, pin: Pin) {
        self.unpin_slot(pin.slot)
    }

    /// Drops a pin known by its slot alone (taken from [`Pin::slot`]).
    #[inline]
    pub(crate) fn unpin_slot(&self, slot: NonNull<Slot>) {
        // SAFETY: slots live as long as the pool, and the slot came from a pin of this
        // pool, which this call ends.
        unsafe { slot.as_ref() }.unpin();
    }

    /// Where the first `len` bytes of a pinned object are.
    #[inline]
    pub(crate) fn span(&self, pin: &Pin, len: usize) -> Span {
        let off = pin.frame_index * PAGE_SIZE + (pin.loc as usize & (PAGE_SIZE - 1));
        // SAFETY: pinned, so the descriptor is alive and the object is at `off`.
        unsafe { self.zspage_span(&*pin.zs, off, len) }
    }

    /// Where `len` bytes at byte `off` of a zspage's chain are (`len` <= PAGE_SIZE, so
    /// at most two frames).
    ///
    /// # Safety
    /// `zs` is alive and its frames are stable for as long as the span is used (a pin
    /// on an object in those bytes, or the class lock with the objects claimed).
    #[inline]
    pub(crate) unsafe fn zspage_span(&self, zs: &ZsPage, off: usize, len: usize) -> Span {
        debug_assert!(len <= PAGE_SIZE);
        let k = off >> PAGE_SHIFT;
        let within = off & (PAGE_SIZE - 1);
        let pfn = zs.frame(k);
        let here = self.frames.addr(((pfn as u64) << PAGE_SHIFT) | within as u64);
        if within + len <= PAGE_SIZE {
            return Span::One(here);
        }
        let next = zs.frame(k + 1);
        if next == pfn + 1 {
            Span::One(here)
        } else {
            Span::Two(here, PAGE_SIZE - within, self.frames.frame_addr(next))
        }
    }

    /// Counts bytes that a read or map had to copy because the object is not
    /// contiguous (only on that slow path, so the shared counter costs the fast path
    /// nothing).
    fn count_copy(&self, n: usize) {
        // Relaxed: a statistic.
        self.counters.read_copied_bytes.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Pins and checks a length against the object's slot.
    fn pin_len(&self, h: Handle, len: usize, call: &str) -> Result<Pin> {
        let pin = self.pin(h, call)?;
        if len > pin.usable {
            self.unpin(pin);
            return Err(self.misuse(call, h.to_raw(), Error::Invalid("length larger than the object's slot")));
        }
        Ok(pin)
    }

    /// Copies `data` into the start of the object.
    pub fn write(&self, h: Handle, data: &[u8]) -> Result<()> {
        let pin = self.pin_len(h, data.len(), "zs_obj_write")?;
        // SAFETY: the span covers data.len() bytes of the pinned object.
        unsafe { self.span(&pin, data.len()).copy_in(data) };
        self.unpin(pin);
        Ok(())
    }

    /// Copies the first `out.len()` bytes of the object into `out`.
    pub fn read(&self, h: Handle, out: &mut [u8]) -> Result<()> {
        let pin = self.pin_len(h, out.len(), "zs_obj_read_begin")?;
        // SAFETY: the span covers out.len() bytes of the pinned object.
        unsafe { self.span(&pin, out.len()).copy_out(out) };
        self.unpin(pin);
        Ok(())
    }

    /// Begins a read of the first `len` bytes: returns a pointer into the pool where
    /// they are contiguous, else copies them to `local` (which must then be non-null
    /// and hold `len` bytes) and returns `local`. The object stays pinned until
    /// [`read_end_raw`](Self::read_end_raw).
    ///
    /// # Safety
    /// A non-null `local` is valid for writes of `len` bytes.
    pub(crate) unsafe fn read_begin_raw(&self, h: Handle, len: usize, local: *mut u8) -> Result<(*const u8, Pin)> {
        const CALL: &str = "zs_obj_read_begin";
        let pin = self.pin_len(h, len, CALL)?;
        match self.span(&pin, len) {
            Span::One(p) => Ok((p, pin)),
            span if !local.is_null() => {
                // SAFETY: caller's contract for `local`; the span covers len bytes.
                unsafe { span.copy_out(std::slice::from_raw_parts_mut(local, len)) };
                self.count_copy(len);
                Ok((local, pin))
            }
            _ => {
                self.unpin(pin);
                Err(self.misuse(CALL, h.to_raw(), Error::Invalid("NULL local_copy for an object that must be copied")))
            }
        }
    }

    /// Ends a read begun by [`read_begin_raw`](Self::read_begin_raw).
    pub(crate) fn read_end_raw(&self, pin: Pin) {
        self.unpin(pin)
    }

    /// Begins a mapping of the whole slot.
    #[inline]
    pub(crate) fn map_begin(&self, h: Handle, mode: MapMode) -> Result<MapState> {
        let pin = self.pin(h, "zs_map_object")?;
        let (slot, len) = (pin.slot, pin.usable);
        Ok(match self.span(&pin, len) {
            Span::One(ptr) => MapState { slot, ptr, len, mode, copy: None },
            span => {
                let mut buf = take_buf();
                if mode != MapMode::WriteOnly {
                    // SAFETY: the span covers the usable bytes; the buffer holds a page.
                    unsafe { span.copy_out(&mut buf[..len]) };
                    self.count_copy(len);
                }
                let ptr = buf.as_mut_ptr();
                MapState { slot, ptr, len, mode, copy: Some(Box::new(CopyBack { buf, pin })) }
            }
        })
    }

    /// Ends a mapping: stores a copied mapping back (unless read-only) and unpins.
    // Always: with a third caller (the C ABI's end of mappings at thread exit) the
    // inliner left it out of line, and zs_unmap_object then moved the state through
    // memory: a map+unmap pair of the C ABI took 1.6 times as long (hot_paths bench).
    #[inline(always)]
    pub(crate) fn map_end(&self, m: MapState) {
        match m.copy {
            None => self.unpin_slot(m.slot),
            Some(c) => {
                let CopyBack { buf, pin } = *c;
                if m.mode != MapMode::ReadOnly {
                    // SAFETY: still pinned; the span covers the usable bytes.
                    unsafe { self.span(&pin, m.len).copy_in(&buf[..m.len]) };
                }
                give_buf(buf);
                self.unpin(pin);
            }
        }
    }

    /// Maps the object: the guard derefs to its whole slot and unmaps on drop.
    #[inline]
    pub fn map(&self, h: Handle, mode: MapMode) -> Result<Mapping<'_>> {
        Ok(Mapping { pool: self, state: Some(self.map_begin(h, mode)?) })
    }

    /// Begins a read of the first `len` bytes, copying into `local` only where they are
    /// not contiguous; the guard derefs to them and ends the read on drop.
    pub fn read_begin<'a>(&'a self, h: Handle, len: usize, local: &'a mut [u8]) -> Result<ObjRead<'a>> {
        if local.len() < len {
            return Err(Error::Invalid("local copy shorter than the length"));
        }
        // SAFETY: `local` holds at least len bytes.
        let (ptr, pin) = unsafe { self.read_begin_raw(h, len, local.as_mut_ptr())? };
        let copied = ptr == local.as_ptr();
        Ok(ObjRead { pool: self, pin: Some(pin), ptr, len, copied, _local: std::marker::PhantomData })
    }
}

/// A mapped object; unmapped when dropped.
#[derive(Debug)]
pub struct Mapping<'a> {
    pool: &'a PoolCore,
    state: Option<MapState>,
}

impl Mapping<'_> {
    #[inline]
    fn st(&self) -> &MapState {
        self.state.as_ref().expect("present until drop")
    }

    /// The mode it was mapped with.
    pub fn mode(&self) -> MapMode {
        self.st().mode
    }

    /// Whether the bytes are a copy (the object is not contiguous in the arena).
    pub fn is_copy(&self) -> bool {
        self.st().copy.is_some()
    }

    /// The slot's bytes, writable. Writes through a read-only mapping of a copied
    /// object are lost, as in the kernel.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let st = self.st();
        // SAFETY: the pointer is the pinned object's slot or our buffer, valid for
        // `len` bytes while the pin is held (until drop); `&mut self` makes this the
        // only reference through this mapping.
        unsafe { std::slice::from_raw_parts_mut(st.ptr(), st.len()) }
    }
}

impl std::ops::Deref for Mapping<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        let st = self.st();
        // SAFETY: as in as_mut_slice, shared.
        unsafe { std::slice::from_raw_parts(st.ptr(), st.len()) }
    }
}

impl Drop for Mapping<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(st) = self.state.take() {
            self.pool.map_end(st);
        }
    }
}

/// A read in progress; ends when dropped.
#[derive(Debug)]
pub struct ObjRead<'a> {
    pool: &'a PoolCore,
    pin: Option<Pin>,
    ptr: *const u8,
    len: usize,
    copied: bool,
    _local: std::marker::PhantomData<&'a mut [u8]>,
}

impl ObjRead<'_> {
    /// Whether the bytes were copied to the local buffer (the object is not
    /// contiguous in the arena).
    pub fn is_copy(&self) -> bool {
        self.copied
    }
}

impl std::ops::Deref for ObjRead<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the pointer is the pinned object or the caller's local copy, valid
        // for `len` bytes while the pin is held.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for ObjRead<'_> {
    fn drop(&mut self) {
        if let Some(pin) = self.pin.take() {
            self.pool.read_end_raw(pin);
        }
    }
}
