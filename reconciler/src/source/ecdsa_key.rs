//! A second reading of OpenSSH-format ECDSA private keys whose private scalar is shorter than
//! the curve's field size.
//!
//! OpenSSH writes the scalar as an `mpint`, which drops leading zero bytes: about one P-256 key
//! in 256 has a 31-byte scalar. ssh-key (0.7.0-rc.11, used by russh) refuses scalars shorter
//! than 32 bytes, so such a key — a perfectly good `ssh-keygen -t ecdsa` key — would be reported
//! unreadable. When the normal decoder fails, [`decode_short_scalar`] walks the key format
//! itself (decrypting with the Secret's password when the key is encrypted), pads the scalar on
//! the left to the field size and builds the keypair through ssh-key's public constructors.
//!
//! Returns `None` whenever it cannot do better than the normal decoder (not OpenSSH, not ECDSA,
//! a wrong password, an AEAD cipher whose tag we do not read, any malformed field), so the
//! caller reports the normal decoder's error. Decrypted bytes are zeroed when dropped.

use base64::Engine as _;
use russh::keys::ssh_key::private::{EcdsaKeypair, EcdsaPrivateKey, KeypairData};
use russh::keys::ssh_key::public::EcdsaPublicKey;
use russh::keys::ssh_key::{Cipher, Kdf, PrivateKey};
use zeroize::Zeroizing;

const BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const END: &str = "-----END OPENSSH PRIVATE KEY-----";
const MAGIC: &[u8] = b"openssh-key-v1\0";

/// Decodes an OpenSSH ECDSA key whose scalar lost leading zero bytes (see the module docs).
pub fn decode_short_scalar(text: &str, password: Option<&str>) -> Option<PrivateKey> {
    let body: String = text
        .split(BEGIN)
        .nth(1)?
        .split(END)
        .next()?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let blob = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .ok()?,
    );
    let mut outer = Wire(blob.get(..)?);
    if outer.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let cipher_name = outer.string()?;
    let _kdf_name = outer.string()?;
    let _kdf_options = outer.string()?;
    if outer.u32()? != 1 {
        return None;
    }
    let _public = outer.string()?;
    let private = outer.string()?;

    let section = if cipher_name == b"none" {
        Zeroizing::new(private.to_vec())
    } else {
        // ssh-key parses an encrypted key without touching the private section, so its KDF and
        // cipher readers can be reused to decrypt that section here.
        let encrypted = PrivateKey::from_bytes(&blob).ok()?;
        let cipher: Cipher = encrypted.cipher();
        if cipher.has_tag() {
            return None;
        }
        let kdf: &Kdf = encrypted.kdf();
        let (key, iv) = kdf.derive_key_and_iv(cipher, password?).ok()?;
        let mut buffer = Zeroizing::new(private.to_vec());
        cipher.decrypt(&key, &iv, &mut buffer, None).ok()?;
        buffer
    };
    keypair_from_section(&section)
}

/// Reads the (decrypted) private section: two equal check words, then the ECDSA keypair and
/// the comment.
fn keypair_from_section(section: &[u8]) -> Option<PrivateKey> {
    let mut wire = Wire(section);
    // Unequal check words mean a wrong password (or a corrupt key).
    if wire.u32()? != wire.u32()? {
        return None;
    }
    let algorithm = wire.string()?;
    let _curve = wire.string()?;
    let point = wire.string()?;
    let scalar = wire.string()?;
    let comment = String::from_utf8(wire.string()?.to_vec()).ok()?;
    let digits = strip_leading_zeros(scalar);
    let public = EcdsaPublicKey::from_sec1_bytes(point).ok()?;
    let keypair = match (algorithm, public) {
        (b"ecdsa-sha2-nistp256", EcdsaPublicKey::NistP256(public)) => EcdsaKeypair::NistP256 {
            public,
            private: EcdsaPrivateKey::from(left_padded::<32>(digits)?),
        },
        (b"ecdsa-sha2-nistp384", EcdsaPublicKey::NistP384(public)) => EcdsaKeypair::NistP384 {
            public,
            private: EcdsaPrivateKey::from(left_padded::<48>(digits)?),
        },
        (b"ecdsa-sha2-nistp521", EcdsaPublicKey::NistP521(public)) => EcdsaKeypair::NistP521 {
            public,
            private: EcdsaPrivateKey::from(left_padded::<66>(digits)?),
        },
        _ => return None,
    };
    PrivateKey::new(KeypairData::Ecdsa(keypair), comment).ok()
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Big-endian `digits` in exactly `N` bytes; `None` when they do not fit (or are zero).
fn left_padded<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.is_empty() || digits.len() > N {
        return None;
    }
    let mut out = [0u8; N];
    out[N - digits.len()..].copy_from_slice(digits);
    Some(out)
}

/// A reader of SSH wire encoding (RFC 4251): big-endian u32 and u32-length-prefixed strings.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        let bytes = self.take(4)?;
        Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_padding_keeps_the_value_and_refuses_what_does_not_fit() {
        assert_eq!(left_padded::<4>(&[1, 2, 3]), Some([0, 1, 2, 3]));
        assert_eq!(left_padded::<2>(&[1, 2, 3]), None);
        assert_eq!(left_padded::<2>(&[]), None);
        assert_eq!(strip_leading_zeros(&[0, 0, 7, 0]), &[7, 0]);
    }

    #[test]
    fn anything_but_an_openssh_key_is_left_to_the_normal_decoder() {
        assert!(decode_short_scalar("not a key", None).is_none());
        let truncated = format!("{BEGIN}\nb3BlbnNzaC1rZXktdjEAAAAA\n{END}\n");
        assert!(decode_short_scalar(&truncated, None).is_none());
    }
}
