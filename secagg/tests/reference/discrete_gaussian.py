"""An independent implementation of the discrete Gaussian sampler of
Canonne, Kamath and Steinke (NeurIPS 2020, algorithms 1 to 3) in Python's
exact integers, drawing from the same bits as hearth_secagg's
RandomBits: the RFC 8439 ChaCha20 keystream of the seed (nonce 0) read as
a little-endian bit stream, each uniform integer below n taken from as
many bits as n - 1 has, again until below n, and each Bernoulli(p) decided
by comparing the stream's bits with p's binary digits until they differ.
Also the table sampler of secagg/src/noise/table.rs, written here from
its description with Python's decimals at 120 digits in place of the
certified bounds (they choose the same values unless a uniform falls within
2^-60 of a bound, which the known answers' few draws never do). Prints the
known answers that secagg/src/noise.rs pins:

    python3 secagg/tests/reference/discrete_gaussian.py
"""

import math
from decimal import Decimal, getcontext

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


def table_sample(s: Stream, num: int, den: int, count: int) -> list:
    """The table sampler: rejection from the envelope m_a = ceil(w(a) 2^B)
    for |x| = a <= T = 7 (floor(sigma) + 1), a geometric tail of ratio
    1 - 2^-k past T, acceptance V < w(x) 2^B / envelope."""
    getcontext().prec = 120
    f = 0
    while (f + 1) ** 2 * den <= num:
        f += 1
    t = 7 * (f + 1)

    def w(a):
        return (-(Decimal(a * a * den) / (2 * num))).exp()

    ws = [w(a) for a in range(t + 2)]
    gap = 1 - (-(Decimal((t + 1) * den) / num)).exp()
    k = 1
    while Decimal(2) ** -k > gap:
        k += 1
    mass = sum(float(v) * (1 if a == 0 else 2) for a, v in enumerate(ws[: t + 1])) + 2 * float(ws[t + 1]) * 2.0**k
    b = min(max(math.floor(62 - math.log2(mass)), 0), 62)
    while True:
        m = [math.ceil(v * 2**b) for v in ws[: t + 1]]
        tail = math.ceil(ws[t + 1] * 2 ** (b + k))
        weights = [m[0]] + [2 * v for v in m[1:]] + [2 * tail]
        if sum(weights) <= 1 << 63:
            break
        b -= 1
    total = sum(weights)

    def below(n):
        # Lemire: the high word of x n, refusing the few low words that bias it.
        while True:
            x = s.take(64) * n
            low = x & (2**64 - 1)
            if low < n and low < (2**64 - n) % n:
                continue
            return x >> 64

    def accept(a, scale, envelope):
        # V < w(a) scale / envelope, V's bits read 64 at a time.
        r = w(a) * scale / envelope
        v, n = s.take(64), 64
        while True:
            if Decimal(v + 1) / Decimal(2) ** n <= r:
                return True
            if Decimal(v) / Decimal(2) ** n >= r:
                return False
            v, n = (v << 64) | s.take(64), n + 64

    out = []
    while len(out) < count:
        u, slot = below(total), 0
        while u >= weights[slot]:
            u -= weights[slot]
            slot += 1
        if slot == 0:
            out.append(0)
            continue
        negative = s.take(1) == 1
        if slot <= t:
            a, ok = slot, accept(slot, 2**b, m[slot])
        else:
            j = 0
            while s.take(k) != 0:
                j += 1
            a = t + 1 + j
            ok = accept(a, Decimal(2) ** (b + k * (j + 1)), tail * (2**k - 1) ** j)
        if ok:
            out.append(-a if negative else a)
    return out


if __name__ == "__main__":
    for seed, num, den in [(7, 1, 2), (7, 2, 1), (8, 10_000, 3), (9, 1_000_000, 1)]:
        s = Stream(bytes([seed]) * 32)
        print(f"seed [{seed}; 32], sigma^2 = {num}/{den}:", [discrete_gaussian(s, num, den) for _ in range(12)])
    print("table sampler:")
    for seed, num, den in [(7, 1, 2), (7, 2, 1), (8, 10_000, 3), (9, 1_000_000, 1), (10, 81_000_000, 1)]:
        print(f"seed [{seed}; 32], sigma^2 = {num}/{den}:", table_sample(Stream(bytes([seed]) * 32), num, den, 12))
