//! A reversible filter for x86-64 machine code that makes it compress better.
//!
//! Code refers to the same functions and globals from many places, but through offsets relative
//! to each instruction, so the same target is a different byte string at every use. The filter
//! turns two kinds of such offsets into absolute positions (their target), which repeat, and zstd
//! finds them: `call rel32` (`E8`) and RIP-relative `mov`/`lea` with a REX.W prefix
//! (`48`/`4C`, then `89`/`8B`/`8D`/`8F`, then a ModRM byte of the form `00 reg 101`). The same idea
//! as the BCJ filter of xz and 7-Zip, with RIP-relative operands added for x86-64.
//!
//! The bundler filters the executable segment of each x86-64 ELF file it stores
//! (`PYSHRINK.x86=START,LEN` in the entry's pax header) and the launcher undoes it while it
//! unpacks, in a stream. The filter is exact on any bytes, code or not: a wrong guess only costs
//! compression.
//!
//! Decoding decides at each position from the encoded bytes what encoding decided from the
//! original ones, so a decision may only read bytes that encoding leaves unchanged:
//! - the opcode bytes, which are never part of a converted operand;
//! - the two bytes after a REX.W prefix: they are an operand only of a conversion at the next
//!   position, and no conversion starts with `89`/`8B`/`8D`/`8F`;
//! - the top byte of a `call` operand, whose being `00` or `FF` (the test for a near call) the
//!   conversion keeps: it works on the 25-bit sign-extended value.
//!
//! That top byte may also be an operand byte of a conversion starting up to three bytes after an
//! `E8` left as it is. So within three bytes after such an `E8` nothing is converted.

/// Bytes a decision and its conversion can span.
pub const SPAN: usize = 7;

/// Converts `data[start..end]` in place (the bundler's side).
pub fn encode(data: &mut [u8], start: usize, end: usize) {
    let mut f = Filter::new(start as u64, end as u64, Direction::Encode);
    f.run(data, 0, true);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Encode,
    Decode,
}

/// The filter over one file, fed its bytes in order, in pieces of any size.
#[derive(Debug, Clone)]
pub struct Filter {
    end: u64,
    /// The next position not yet decided.
    next: u64,
    /// One past the position of the last `E8` left unconverted (0: none yet).
    after_e8: u64,
    dir: Direction,
}

impl Filter {
    /// A filter of the file range `start..end`.
    pub fn new(start: u64, end: u64, dir: Direction) -> Filter {
        Filter {
            end,
            next: start,
            after_e8: 0,
            dir,
        }
    }

    /// Filters what can be decided of `buf`, which holds the file's bytes from offset `at`;
    /// `at` is at most the first undecided position, so bytes handed back undecided come again.
    /// `last` says that `buf` reaches the end of the file. Returns how many leading bytes of
    /// `buf` are final; with `last`, or when the range ends inside `buf`, that is all of them.
    pub fn run(&mut self, buf: &mut [u8], at: u64, last: bool) -> usize {
        let avail = at + buf.len() as u64;
        if self.next >= self.end || avail <= self.next && last {
            return buf.len();
        }
        debug_assert!(at <= self.next);
        let whole = last || self.end <= avail;
        let range_end = (self.end.min(avail) - at) as usize;
        // Without the rest of the range, stop where a decision could need bytes not yet here.
        let stop = if whole {
            range_end
        } else {
            buf.len().saturating_sub(SPAN - 1)
        };
        let mut i = (self.next - at) as usize;
        let b = buf;
        while i < stop {
            if i + CANDIDATE_WINDOW <= b.len() {
                match candidates(&b[i..i + CANDIDATE_WINDOW]) {
                    // Never past `stop`: where a piece leaves off must not depend on where the
                    // pieces were cut, or a truncated stream would give different lengths.
                    0 => {
                        i = (i + 16).min(stop);
                        continue;
                    }
                    m => i = (i + m.trailing_zeros() as usize).min(stop),
                }
                if i == stop {
                    break;
                }
            }
            let op = b[i];
            if op != 0xE8 && op & 0xFB != 0x48 {
                i += 1;
                continue;
            }
            let pos = at + i as u64;
            // `after_e8` counts from one, so `pos + 1 - after_e8` is the distance to that E8.
            if self.after_e8 != 0 && pos + 1 - self.after_e8 <= 3 {
                if op == 0xE8 {
                    self.after_e8 = pos + 1;
                }
                i += 1;
                continue;
            }
            if op == 0xE8 {
                if i + 5 <= range_end && b[i + 4].wrapping_add(1) <= 1 {
                    let v = le32(&b[i + 1..i + 5]);
                    let v = self.shift(v, pos + 5);
                    // Keep 25 bits, sign-extended: the top byte stays 00 or FF.
                    let v = (((v << 7) as i32) >> 7) as u32;
                    b[i + 1..i + 5].copy_from_slice(&v.to_le_bytes());
                    i += 5;
                } else {
                    self.after_e8 = pos + 1;
                    i += 1;
                }
            } else if i + SPAN <= range_end && b[i + 1] & 0xF9 == 0x89 && b[i + 2] & 0xC7 == 0x05 {
                let v = le32(&b[i + 3..i + 7]);
                let v = self.shift(v, pos + 7);
                b[i + 3..i + 7].copy_from_slice(&v.to_le_bytes());
                i += SPAN;
            } else {
                i += 1;
            }
        }
        self.next = at + i as u64;
        if self.next >= self.end || whole {
            self.next = self.next.max(self.end);
            return b.len();
        }
        // Positions before the range are final without a decision.
        i.min(b.len())
    }

    /// The first position not decided yet: none is, past the range.
    pub fn next(&self) -> u64 {
        if self.next >= self.end {
            u64::MAX
        } else {
            self.next
        }
    }

    fn shift(&self, v: u32, next_insn: u64) -> u32 {
        match self.dir {
            Direction::Encode => v.wrapping_add(next_insn as u32),
            Direction::Decode => v.wrapping_sub(next_insn as u32),
        }
    }
}

/// Bytes [`candidates`] reads: 16 positions and the two bytes after the last.
const CANDIDATE_WINDOW: usize = 18;

/// A bit for each of the 16 positions at the start of `w` where a decision could be other than
/// "move on": an `E8`, or a REX.W `mov`/`lea` with a RIP-relative operand. Positions without a
/// bit are skipped together, which keeps the launcher's unpacking fast (code has one or two
/// such positions in 50 bytes).
#[cfg(target_arch = "x86_64")]
fn candidates(w: &[u8]) -> u32 {
    use core::arch::x86_64::*;
    assert!(w.len() >= CANDIDATE_WINDOW);
    // SAFETY: SSE2 is part of x86-64; the three unaligned 16-byte loads end within `w`, whose
    // length was checked above.
    unsafe {
        let p = w.as_ptr();
        let v0 = _mm_loadu_si128(p as *const __m128i);
        let v1 = _mm_loadu_si128(p.add(1) as *const __m128i);
        let v2 = _mm_loadu_si128(p.add(2) as *const __m128i);
        let is = |v, mask: u8, want: u8| {
            _mm_cmpeq_epi8(
                _mm_and_si128(v, _mm_set1_epi8(mask as i8)),
                _mm_set1_epi8(want as i8),
            )
        };
        let call = _mm_cmpeq_epi8(v0, _mm_set1_epi8(0xE8u8 as i8));
        let rip = _mm_and_si128(
            _mm_and_si128(is(v0, 0xFB, 0x48), is(v1, 0xF9, 0x89)),
            is(v2, 0xC7, 0x05),
        );
        _mm_movemask_epi8(_mm_or_si128(call, rip)) as u32
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn candidates(w: &[u8]) -> u32 {
    (0..16).fold(0, |m, k| {
        let hit = w[k] == 0xE8
            || (w[k] & 0xFB == 0x48 && w[k + 1] & 0xF9 == 0x89 && w[k + 2] & 0xC7 == 0x05);
        m | (u32::from(hit) << k)
    })
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes rich in the patterns the filter looks for.
    fn code_like(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let r = (s >> 16).to_le_bytes();
            let top = [0x00, 0xFF, r[5]][s as usize % 3];
            match s % 7 {
                0 => out.extend_from_slice(&[0xE8, r[0], r[1], r[2], top]),
                1 => out.extend_from_slice(&[
                    0x48 | (r[3] & 4),
                    0x89 | (r[4] & 6),
                    0x05 | (r[5] & 0x38),
                ]),
                2 => out.extend_from_slice(&[0xE8, 0xE8, 0x48, 0x8B, 0x05, top]),
                _ => out.extend_from_slice(&r[..3]),
            }
        }
        out.truncate(n);
        out
    }

    fn decode_in_pieces(data: &[u8], start: u64, end: u64, piece: usize) -> Vec<u8> {
        let mut f = Filter::new(start, end, Direction::Decode);
        let mut out = Vec::new();
        let mut held: Vec<u8> = Vec::new();
        let mut at = 0u64;
        let mut src = data;
        while !src.is_empty() || !held.is_empty() {
            let take = piece.min(src.len());
            let mut buf = held.clone();
            buf.extend_from_slice(&src[..take]);
            src = &src[take..];
            let n = f.run(&mut buf, at, src.is_empty());
            out.extend_from_slice(&buf[..n]);
            held = buf[n..].to_vec();
            at += n as u64;
            if src.is_empty() {
                assert!(held.is_empty(), "the last piece leaves nothing undecided");
            }
        }
        out
    }

    #[test]
    fn decoding_in_pieces_of_any_size_restores_the_bytes() {
        for seed in 1..40u64 {
            let original = code_like(3000, seed);
            for (start, end) in [(0, 3000), (17, 2900), (100, 101), (5, 11), (0, 0)] {
                let mut enc = original.clone();
                encode(&mut enc, start, end);
                for piece in [1, 2, 6, 7, 8, 13, 64, 4096] {
                    let dec = decode_in_pieces(&enc, start as u64, end as u64, piece);
                    assert_eq!(
                        dec, original,
                        "seed {seed} range {start}..{end} piece {piece}"
                    );
                }
            }
        }
    }

    /// A stream that ends early (a damaged bundle) gives out the same bytes however it was cut.
    #[test]
    fn a_cut_stream_gives_out_the_same_prefix_for_any_pieces() {
        for seed in 1..20u64 {
            let mut enc = code_like(2000, seed);
            encode(&mut enc, 3, 1990);
            let cut = &enc[..1500 + seed as usize * 7];
            let given = |piece: usize| {
                let mut f = Filter::new(3, 1990, Direction::Decode);
                let (mut out, mut held, mut at) = (Vec::new(), Vec::new(), 0u64);
                for chunk in cut.chunks(piece) {
                    let mut buf = core::mem::take(&mut held);
                    buf.extend_from_slice(chunk);
                    let n = f.run(&mut buf, at, false);
                    out.extend_from_slice(&buf[..n]);
                    held = buf[n..].to_vec();
                    at += n as u64;
                }
                out
            };
            let whole = given(cut.len());
            for piece in [1, 5, 7, 16, 33, 100] {
                assert_eq!(given(piece), whole, "seed {seed} piece {piece}");
            }
        }
    }

    #[test]
    fn converts_calls_and_rip_relative_operands_to_their_targets() {
        // Two calls to the same target from different places, and two lea of the same global.
        let mut code = vec![0x90; 64];
        code[0..5].copy_from_slice(&[0xE8, 0x1B, 0x00, 0x00, 0x00]); // call 0x20
        code[10..15].copy_from_slice(&[0xE8, 0x11, 0x00, 0x00, 0x00]); // call 0x20
        code[20..27].copy_from_slice(&[0x48, 0x8D, 0x05, 0x19, 0x00, 0x00, 0x00]); // lea 0x34
        code[30..37].copy_from_slice(&[0x4C, 0x8B, 0x0D, 0x0F, 0x00, 0x00, 0x00]); // mov 0x34
        let mut enc = code.clone();
        encode(&mut enc, 0, code.len());
        assert_eq!(enc[1..5], enc[11..15]);
        assert_eq!(enc[1..5], [0x20, 0, 0, 0]);
        assert_eq!(enc[23..27], enc[33..37]);
        assert_eq!(enc[23..27], [0x34, 0, 0, 0]);
        assert_eq!(decode_in_pieces(&enc, 0, 64, 3), code);
    }

    #[test]
    fn leaves_bytes_outside_the_range_alone() {
        let original = code_like(500, 7);
        let mut enc = original.clone();
        encode(&mut enc, 100, 200);
        assert_eq!(enc[..100], original[..100]);
        assert_eq!(enc[200..], original[200..]);
        assert_ne!(enc[100..200], original[100..200]);
    }
}
