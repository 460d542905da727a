using System;
using System.Collections.Generic;

namespace LongNet.CSharp;

/// <summary>Argument checks shared by the builders: each throws naming the C# parameter; never public.</summary>
internal static class Checks
{
    internal static int AtLeast(int value, int minimum, string parameter)
    {
        if (value < minimum)
        {
            throw new ArgumentOutOfRangeException(parameter, value, $"{parameter} must be ≥ {minimum}, got {value}.");
        }

        return value;
    }

    internal static long AtLeast(long value, long minimum, string parameter)
    {
        if (value < minimum)
        {
            throw new ArgumentOutOfRangeException(parameter, value, $"{parameter} must be ≥ {minimum}, got {value}.");
        }

        return value;
    }

    /// <summary>A finite number in [low, high) (or [low, high] when <paramref name="highIncluded"/>; (low, …) when not <paramref name="lowIncluded"/>).</summary>
    internal static double InRange(double value, double low, double high, string parameter, bool lowIncluded = true, bool highIncluded = false)
    {
        var aboveLow = lowIncluded ? value >= low : value > low;
        var belowHigh = highIncluded ? value <= high : value < high;
        if (!double.IsFinite(value) || !aboveLow || !belowHigh)
        {
            var range = $"{(lowIncluded ? "[" : "(")}{low}, {high}{(highIncluded ? "]" : ")")}";
            throw new ArgumentOutOfRangeException(parameter, value, $"{parameter} must be in {range}, got {value}.");
        }

        return value;
    }

    /// <summary>A finite number &gt; <paramref name="low"/>.</summary>
    internal static double Above(double value, double low, string parameter)
    {
        if (!double.IsFinite(value) || value <= low)
        {
            throw new ArgumentOutOfRangeException(parameter, value, $"{parameter} must be a finite number > {low}, got {value}.");
        }

        return value;
    }

    internal static T Defined<T>(T value, string parameter)
        where T : struct, Enum
    {
        if (!Enum.IsDefined(value))
        {
            throw new ArgumentOutOfRangeException(parameter, value, $"{parameter} must be one of {string.Join(", ", Enum.GetNames<T>())}.");
        }

        return value;
    }

    /// <summary>A non-empty copy of <paramref name="values"/>, each checked by <paramref name="check"/>.</summary>
    internal static T[] NonEmpty<T>(IEnumerable<T>? values, string parameter, Action<T, string> check)
    {
        ArgumentNullException.ThrowIfNull(values, parameter);
        var copy = new List<T>(values).ToArray();
        if (copy.Length == 0)
        {
            throw new ArgumentException($"{parameter} must hold at least one value.", parameter);
        }

        for (var i = 0; i < copy.Length; i++)
        {
            check(copy[i], $"{parameter}");
        }

        return copy;
    }

    internal static string NotBlank(string? value, string parameter)
    {
        ArgumentNullException.ThrowIfNull(value, parameter);
        if (string.IsNullOrWhiteSpace(value))
        {
            throw new ArgumentException($"{parameter} must not be empty.", parameter);
        }

        return value;
    }
}
