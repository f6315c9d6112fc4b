/* Exact conversion of a double (seconds or dollars) to whole billionths.
 *
 * The result is the double's exact binary value times 1e9, rounded
 * half-to-even, the same as round(Fraction(x) * 10**9) in Python. Each
 * function returns 1 with *out set, or 0 when the caller must take the exact
 * (slow) path in Python: a value that is not finite, out of range, or too
 * close to a tie to decide with double arithmetic on a compiler without
 * 128-bit integers.
 */
#ifndef LBW_NANOS_H
#define LBW_NANOS_H

#include <math.h>
#include <stdint.h>

/* Results stay strictly inside (-2**62, 2**62). */
#define LBW_NANOS_LIMIT 4611686018427387904.0

/* Below 2**43 the product x * 1e9 is within 2**-11 of its exact value, so
 * rounding the double gives the exact result unless it lies within 2**-9 of
 * a half. */
#define LBW_DOUBLE_EXACT_LIMIT 8796093022208.0
#define LBW_TIE_MARGIN 0.001953125

static inline int lbw_double_to_nanos(double x, int64_t *out)
{
    double product = x * 1e9;
    double fraction;
    int64_t whole;

    if (product > -LBW_DOUBLE_EXACT_LIMIT && product < LBW_DOUBLE_EXACT_LIMIT) {
        /* Floor without a libm call: truncate, then step down if negative. */
        whole = (int64_t)product;
        fraction = product - (double)whole;
        if (fraction < 0.0) {
            whole -= 1;
            fraction += 1.0;
        }
        if (fraction > 0.5 - LBW_TIE_MARGIN && fraction < 0.5 + LBW_TIE_MARGIN)
            goto wide;
        *out = fraction > 0.5 ? whole + 1 : whole;
        return 1;
    }
    if (!(product > -LBW_NANOS_LIMIT && product < LBW_NANOS_LIMIT))
        return 0;

wide:
#ifdef __SIZEOF_INT128__
    {
        /* x = mantissa * 2**exponent exactly, with |mantissa| < 2**53. */
        int exponent;
        double fraction_part = frexp(x, &exponent);
        int64_t mantissa = (int64_t)ldexp(fraction_part, 53);
        __int128 scaled = (__int128)mantissa * 1000000000;
        __int128 quotient, remainder, half;
        int shift;

        exponent -= 53;
        if (exponent >= 0) {
            /* Only reachable for |x| >= 2**53, far outside the limit. */
            return 0;
        }
        shift = -exponent;
        if (shift > 120)
            return 0;
        quotient = scaled >> shift; /* floor, also for negative values */
        remainder = scaled - (quotient << shift);
        half = (__int128)1 << (shift - 1);
        if (remainder > half || (remainder == half && (quotient & 1)))
            quotient += 1;
        if (quotient <= -(__int128)4611686018427387904LL
            || quotient >= (__int128)4611686018427387904LL)
            return 0;
        *out = (int64_t)quotient;
        return 1;
    }
#else
    return 0;
#endif
}

#endif /* LBW_NANOS_H */
