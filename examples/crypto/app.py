"""AES-256-GCM with pycryptodome: encrypts a fixed message under a fixed key and nonce, checks
that it decrypts, and prints the (deterministic) results."""
import sys
from importlib.metadata import version

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import PBKDF2


def main():
    key = PBKDF2(b"correct horse battery staple", b"pyshrink", dkLen=32, count=1000,
                 hmac_hash_module=SHA256)
    nonce = bytes(range(12))
    header = b"example header"
    message = b"attack at dawn"

    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
    cipher.update(header)
    ciphertext, tag = cipher.encrypt_and_digest(message)

    decipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
    decipher.update(header)
    plaintext = decipher.decrypt_and_verify(ciphertext, tag)

    tampered = AES.new(key, AES.MODE_GCM, nonce=nonce)
    tampered.update(header)
    try:
        tampered.decrypt_and_verify(ciphertext[:-1] + bytes([ciphertext[-1] ^ 1]), tag)
        forgery = "accepted"
    except ValueError:
        forgery = "rejected"

    print("pycryptodome", version("pycryptodome"))
    print("key        ", key.hex())
    print("ciphertext ", ciphertext.hex())
    print("tag        ", tag.hex())
    print("plaintext  ", plaintext.decode())
    print("forgery    ", forgery)
    print("sha256     ", SHA256.new(ciphertext + tag).hexdigest())
    return 0 if plaintext == message and forgery == "rejected" else 1


if __name__ == "__main__":
    sys.exit(main())
