from __future__ import annotations

from inference import errors


def test_every_error_has_a_unique_code_and_a_user_message() -> None:
    classes = errors.error_types()
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes))
    for cls in classes:
        message = cls().message
        assert message and not message[0].islower() and message.endswith((".", "!"))


def test_error_codes_round_trip_across_the_queue() -> None:
    err = errors.error_from_code("image_too_large", "That file is 30 MB; the limit is 25 MB.")
    assert isinstance(err, errors.ImageTooLarge)
    assert err.message == "That file is 30 MB; the limit is 25 MB."
    assert type(errors.error_from_code("no-such-code")) is errors.PalicordError
