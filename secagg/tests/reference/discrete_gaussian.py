"""An independent implementation of the discrete Gaussian sampler of
Canonne, Kamath and Steinke (NeurIPS 2020, algorithms 1 to 3) in Python's
exact integers, drawing from the same bits as hearth_secagg's
RandomBits: the RFC 8439 ChaCha20 keystream of the seed (nonce 0) read as
a little-endian bit stream, each uniform integer below n taken from as
many bits as n - 1 has, again until below n, and each Bernoulli(p) decided
by comparing the stream's bits with p's binary digits until they differ.
Prints the known answers that secagg/src/noise.rs pins:

    python3 secagg/tests/reference/discrete_gaussian.py
"""

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms


class Stream:
    def __init__(self, seed: bytes):
        self.enc = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
        self.buf, self.left = 0, 0

    def take(self, b: int) -> int:
        while self.left < b:
            self.buf |= int.from_bytes(self.enc.update(bytes(8)), "little") << self.left
            self.left += 64
        v = self.buf & ((1 << b) - 1)
        self.buf >>= b
        self.left -= b
        return v


def uniform_below(s: Stream, n: int) -> int:
    width = (n - 1).bit_length()
    if width == 0:
        return 0
    while True:
        v = s.take(width)
        if v < n:
            return v


def bernoulli(s: Stream, num: int, den: int) -> bool:
    # Is U < num/den, for U uniform in [0, 1) whose binary digits are the
    # stream's next bits? Compared digit by digit; when num/den's digits
    # run out (all 0 from here) with U equal so far, U is not below it.
    if num >= den:
        return True
    rest = num
    while rest:
        rest *= 2
        digit = rest >= den
        if digit:
            rest -= den
        if s.take(1) != digit:
            return digit
    return False


def bernoulli_exp(s: Stream, num: int, den: int) -> bool:
    # exp(-num/den): floor(num/den) draws of exp(-1), then one of the rest.
    if num < den:
        return bernoulli_exp_le1_raw(s, num, den)
    whole = num // den
    for _ in range(whole):
        if not bernoulli_exp_le1_raw(s, 1, 1):
            return False
    rest = num - whole * den
    return rest == 0 or bernoulli_exp_le1_raw(s, rest, den)


def bernoulli_exp_le1_raw(s: Stream, num: int, den: int) -> bool:
    # exp(-num/den) for num <= den: the parity of the first k at which
    # Bernoulli(num / (den k)) fails.
    k = 1
    while bernoulli(s, num, den * k):
        k += 1
    return k % 2 == 1


def discrete_laplace(s: Stream, t: int) -> int:
    while True:
        u = uniform_below(s, t)
        if not bernoulli_exp(s, u, t):
            continue
        v = 0
        while bernoulli_exp_le1_raw(s, 1, 1):
            v += 1
        x = u + t * v
        negative = bernoulli(s, 1, 2)
        if negative and x == 0:
            continue
        return -x if negative else x


def discrete_gaussian(s: Stream, num: int, den: int) -> int:
    # t = floor(sigma) + 1, sigma^2 = num / den.
    f = 0
    while (f + 1) ** 2 * den <= num:
        f += 1
    t = f + 1
    while True:
        y = discrete_laplace(s, t)
        diff = abs(abs(y) * t * den - num)
        if bernoulli_exp(s, diff * diff, 2 * num * den * t * t):
            return y


if __name__ == "__main__":
    for seed, num, den in [(7, 1, 2), (7, 2, 1), (8, 10_000, 3), (9, 1_000_000, 1)]:
        s = Stream(bytes([seed]) * 32)
        print(f"seed [{seed}; 32], sigma^2 = {num}/{den}:", [discrete_gaussian(s, num, den) for _ in range(12)])
