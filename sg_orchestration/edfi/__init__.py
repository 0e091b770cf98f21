"""What the Ed-Fi target's layers share: the payload schemas of its two profiles (SPEC §4.2)."""
